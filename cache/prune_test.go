package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// pruneFixture is a store holding, as the names say:
//
//	image:   a layer a named image uses (no step record)
//	recent:  a layer a step record hit an hour ago uses
//	old:     a layer only a step record unused for 10 days uses
//	loose:   a layer no record uses, stored 5 days ago
//	fresh:   a layer no record uses, stored just now
//
// plus an empty step record (20 days old), a step record whose layer is
// gone and an orphan blob. Layers hold 64 KiB of incompressible data each.
type pruneFixture struct {
	s      *Store
	layers map[string]LayerInfo
	steps  map[string]string // name → key
	orphan v1.Hash
}

func newPruneFixture(t *testing.T) *pruneFixture {
	t.Helper()
	ctx := context.Background()
	f := &pruneFixture{s: openStore(t), layers: map[string]LayerInfo{}, steps: map[string]string{}}
	now := time.Now()
	ages := map[string]time.Duration{"image": 30 * 24 * time.Hour, "recent": 2 * time.Hour, "old": 10 * 24 * time.Hour, "loose": 5 * 24 * time.Hour, "fresh": 0}
	for i, n := range []string{"image", "recent", "old", "loose", "fresh"} {
		dir, err := f.s.TempDir("upper-")
		if err != nil {
			t.Fatal(err)
		}
		w, err := os.Create(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		randomBytes(w, 64<<10)
		fmt.Fprint(w, i)
		w.Close()
		info, _, err := f.s.CommitDir(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		f.layers[n] = info
		stored := now.Add(-ages[n])
		os.Chtimes(filepath.Dir(info.Dir), stored, stored)
	}
	img, err := mutate.AppendLayers(empty.Image, f.s.Layer(f.layers["image"], ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.PutImage(ctx, []string{"app"}, img); err != nil {
		t.Fatal(err)
	}
	for i, st := range []struct {
		name string
		rec  StepRecord
		age  time.Duration
	}{
		{"recent", StepRecord{DiffID: f.layers["recent"].DiffID}, time.Hour},
		{"old", StepRecord{DiffID: f.layers["old"].DiffID}, 10 * 24 * time.Hour},
		{"empty", StepRecord{Empty: true}, 20 * 24 * time.Hour},
		{"dangling", StepRecord{DiffID: sha256Of([]byte("gone"))}, time.Hour},
	} {
		key := fmt.Sprintf("%064x", i+1)
		if err := f.s.PutStep(key, st.rec); err != nil {
			t.Fatal(err)
		}
		used := now.Add(-st.age)
		os.Chtimes(f.s.stepPath(key), used, used)
		f.steps[st.name] = key
	}
	f.orphan = sha256Of([]byte("orphan"))
	if err := os.WriteFile(f.s.blobPath(f.orphan), []byte("orphan"), 0o644); err != nil {
		t.Fatal(err)
	}
	// what a killed build leaves
	if err := os.WriteFile(filepath.Join(f.s.tmp(), "upper-killed"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// present lists the fixture's layers and steps still in the store.
func (f *pruneFixture) present(t *testing.T) (layers, steps []string) {
	t.Helper()
	for n, info := range f.layers {
		_, ok, err := f.s.LayerByDiffID(info.DiffID)
		if err != nil {
			t.Fatal(err)
		}
		_, blobErr := os.Stat(f.s.blobPath(info.Digest))
		if ok != (blobErr == nil) {
			t.Errorf("layer %s: unpacked %v but blob error %v", n, ok, blobErr)
		}
		if ok {
			layers = append(layers, n)
		}
	}
	for n, key := range f.steps {
		if _, err := os.Stat(f.s.stepPath(key)); err == nil {
			steps = append(steps, n)
		}
	}
	sort.Strings(layers)
	sort.Strings(steps)
	return layers, steps
}

func TestPrune(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name         string
		opts         PruneOptions
		layers       []string
		steps        []string
		keepFraction float64 // KeepStorage as a fraction of the store's size
	}{
		{"default: unreferenced layers", PruneOptions{},
			[]string{"image", "old", "recent"}, []string{"empty", "old", "recent"}, 0},
		{"until 3 days", PruneOptions{Until: 3 * 24 * time.Hour},
			[]string{"fresh", "image", "recent"}, []string{"recent"}, 0},
		{"until 3 days, all", PruneOptions{All: true, Until: 3 * 24 * time.Hour},
			[]string{"fresh", "image", "recent"}, []string{"recent"}, 0},
		{"all", PruneOptions{All: true},
			[]string{"image"}, nil, 0},
		// The three least recently used unpinned layers (old 10d, loose 5d,
		// recent 1h) go before fresh (now); image is pinned.
		{"keep-storage", PruneOptions{},
			[]string{"fresh", "image", "recent"}, []string{"empty", "recent"}, 0.7},
		{"dry run", PruneOptions{All: true, DryRun: true},
			[]string{"fresh", "image", "loose", "old", "recent"}, []string{"dangling", "empty", "old", "recent"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPruneFixture(t)
			opts := tc.opts
			if tc.keepFraction > 0 {
				du, err := f.s.DiskUsage()
				if err != nil {
					t.Fatal(err)
				}
				opts.KeepStorage = int64(float64(du.Total.Size) * tc.keepFraction)
			}
			rep, err := f.s.Prune(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			layers, steps := f.present(t)
			if fmt.Sprint(layers) != fmt.Sprint(tc.layers) {
				t.Errorf("layers left: %v, want %v", layers, tc.layers)
			}
			if fmt.Sprint(steps) != fmt.Sprint(tc.steps) {
				t.Errorf("steps left: %v, want %v", steps, tc.steps)
			}
			if rep.Reclaimed <= 0 {
				t.Errorf("report %+v: nothing reclaimed", rep)
			}
			_, orphanErr := os.Stat(f.s.blobPath(f.orphan))
			if ents, _ := os.ReadDir(f.s.tmp()); opts.DryRun == (len(ents) == 0) || opts.DryRun == (orphanErr != nil) {
				t.Errorf("debris: %d tmp entries, orphan blob: %v", len(ents), orphanErr)
			}
			if opts.KeepStorage > 0 && rep.Remaining > opts.KeepStorage {
				t.Errorf("remaining %d > keep %d", rep.Remaining, opts.KeepStorage)
			}
			if !opts.DryRun {
				du, err := f.s.DiskUsage()
				if err != nil {
					t.Fatal(err)
				}
				if du.Total.Size != rep.Remaining {
					t.Errorf("du says %d after prune, the report %d", du.Total.Size, rep.Remaining)
				}
			}
			// the image is whole and usable
			img, ok, err := f.s.Image("app")
			if err != nil || !ok {
				t.Fatal(ok, err)
			}
			if _, err := mutate.Extract(img).Read(make([]byte, 1)); err != nil {
				t.Errorf("reading the image after prune: %v", err)
			}
		})
	}
}

func TestDiskUsage(t *testing.T) {
	requireRoot(t)
	f := newPruneFixture(t)
	// what other parts of kiln keep under the root
	os.MkdirAll(filepath.Join(f.s.Root, "logs"), 0o755)
	os.WriteFile(filepath.Join(f.s.Root, "logs", "build.log"), []byte("log"), 0o644)
	du, err := f.s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	// 5 layers; blobs: 5 layers + manifest + config + orphan
	for _, c := range []struct {
		what        string
		u           Usage
		count       int
		reclaimable bool
	}{
		{"layers", du.Layers, 5, true},
		{"blobs", du.Blobs, 8, true},
		{"steps", du.Steps, 4, true},
		{"images", du.Images, 1, false},
		{"tmp", du.Tmp, 1, true},
		{"other", du.Other, 1, false},
	} {
		if c.u.Count != c.count || c.u.Size <= 0 || (c.u.Reclaimable > 0) != c.reclaimable || c.u.Reclaimable > c.u.Size {
			t.Errorf("%s: %+v, want count %d", c.what, c.u, c.count)
		}
	}
	if du.Total.Size != du.Layers.Size+du.Blobs.Size+du.Steps.Size+du.Images.Size+du.Tmp.Size+du.Other.Size {
		t.Errorf("total %+v is not the sum", du.Total)
	}
	// reclaimable is exactly what prune --all frees
	rep, err := f.s.Prune(context.Background(), PruneOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reclaimed != du.Total.Reclaimable {
		t.Errorf("prune --all reclaimed %d, du said %d", rep.Reclaimed, du.Total.Reclaimable)
	}
}

// TestPruneWhileBuilding: a store another "process" (a second Store on the
// same root, with its own lock) has open is never pruned under it.
func TestPruneWhileBuilding(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	f := newPruneFixture(t)
	build, err := Open(f.s.Root)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := f.s.Prune(ctx, PruneOptions{All: true}); !errors.Is(err, ErrStoreBusy) {
		t.Fatalf("Prune while a build holds the store: %v, want ErrStoreBusy", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	waited := false
	_, err = f.s.Prune(waitCtx, PruneOptions{All: true, Wait: func() { waited = true }})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !waited {
		t.Fatalf("Prune with Wait: %v (waited %v), want it to wait until cancelled", err, waited)
	}
	layers, _ := f.present(t)
	if len(layers) != 5 {
		t.Fatalf("layers removed while a build held the store: %v left", layers)
	}
	if ents, _ := os.ReadDir(f.s.tmp()); len(ents) == 0 {
		t.Error("tmp cleared while a build held the store")
	}

	// The build goes on working: its scratch and commits are untouched.
	dir, err := build.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "new"), []byte("new"), 0o644)
	info, _, err := build.CommitDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := build.PutStep(fmt.Sprintf("%064x", 99), StepRecord{DiffID: info.DiffID}); err != nil {
		t.Fatal(err)
	}

	// Once the build closes the store (or its process exits), a waiting
	// prune goes ahead.
	done := make(chan error, 1)
	waiting := make(chan struct{})
	go func() {
		_, err := f.s.Prune(ctx, PruneOptions{Wait: func() { close(waiting) }})
		done <- err
	}()
	<-waiting
	if err := build.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.s.LayerByDiffID(info.DiffID); !ok {
		t.Error("prune removed the layer the build recorded a step for")
	}
	// the pruning Store is usable again, and shared
	if _, err := f.s.TempDir("after-"); err != nil {
		t.Error(err)
	}
	if s2, err := Open(f.s.Root); err != nil {
		t.Error(err)
	} else {
		s2.Close()
	}
}
