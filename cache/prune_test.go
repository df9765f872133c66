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
		keepFraction float64 // KeepStorage as a fraction of what prune --all would free
	}{
		{"default: unreferenced layers", PruneOptions{},
			[]string{"image", "old", "recent"}, []string{"empty", "old", "recent"}, 0},
		{"until 3 days", PruneOptions{Until: 3 * 24 * time.Hour},
			[]string{"fresh", "image", "recent"}, []string{"recent"}, 0},
		{"until 3 days, all", PruneOptions{All: true, Until: 3 * 24 * time.Hour},
			[]string{"fresh", "image", "recent"}, []string{"recent"}, 0},
		{"all", PruneOptions{All: true},
			[]string{"image"}, nil, 0},
		// The least recently used unpinned layers (old 10d, loose 5d) go
		// first, until the cache prune could remove fits; image is pinned.
		{"keep-storage", PruneOptions{},
			[]string{"fresh", "image", "recent"}, []string{"empty", "recent"}, 0.6},
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
				opts.KeepStorage = int64(float64(du.Total.Reclaimable) * tc.keepFraction)
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
			if opts.KeepStorage > 0 && rep.RemainingCache > opts.KeepStorage {
				t.Errorf("remaining cache %d > keep %d", rep.RemainingCache, opts.KeepStorage)
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

// TestPruneKeepStorageCountsCacheOnly: --keep-storage bounds what prune
// could remove; images, logs and kept debug states do not count, so a
// store whose cache already fits loses nothing but debris however big the
// rest is.
func TestPruneKeepStorageCountsCacheOnly(t *testing.T) {
	requireRoot(t)
	f := newPruneFixture(t)
	for _, p := range []string{"logs/build.log", "debug/b1/step-1/upper/big"} {
		p = filepath.Join(f.s.Root, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		w, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		randomBytes(w, 1<<20)
		w.Close()
	}
	du, err := f.s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	if du.Total.Size < 2*du.Total.Reclaimable {
		t.Fatalf("fixture: total %d, reclaimable %d: want the non-cache part to dominate", du.Total.Size, du.Total.Reclaimable)
	}
	rep, err := f.s.Prune(context.Background(), PruneOptions{KeepStorage: du.Total.Reclaimable})
	if err != nil {
		t.Fatal(err)
	}
	layers, steps := f.present(t)
	if fmt.Sprint(layers) != "[fresh image loose old recent]" || fmt.Sprint(steps) != "[empty old recent]" {
		t.Errorf("layers %v, steps %v left: want all but debris", layers, steps)
	}
	if rep.RemainingCache > du.Total.Reclaimable || rep.Remaining <= rep.RemainingCache {
		t.Errorf("report %+v", rep)
	}
}

// makeCacheMount creates an instance of cache mount id holding 64 KiB,
// last used age ago.
func makeCacheMount(t *testing.T, s *Store, id string, age time.Duration) string {
	t.Helper()
	dir, release, err := s.CacheMount(context.Background(), id, CacheShared, CacheMountInit{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.Create(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	randomBytes(w, 64<<10)
	w.Close()
	release()
	used := time.Now().Add(-age)
	if err := os.Chtimes(dir+".lock", used, used); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPruneCacheMounts: cache mounts are kept by a plain prune, removed by
// age with until=, least recently used first with --keep-storage, all of
// them with --all; half-made ones are debris.
func TestPruneCacheMounts(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		opts PruneOptions
		left string
	}{
		{"default", PruneOptions{}, "[a b c]"},
		{"until 3 days", PruneOptions{Until: 3 * 24 * time.Hour}, "[b c]"},
		{"keep-storage", PruneOptions{KeepStorage: 100 << 10}, "[c]"},
		{"all", PruneOptions{All: true}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			dirs := map[string]string{
				"a": makeCacheMount(t, s, "a", 10*24*time.Hour),
				"b": makeCacheMount(t, s, "b", 2*24*time.Hour),
				"c": makeCacheMount(t, s, "c", time.Minute),
			}
			half := filepath.Join(s.cacheMountsDir(), ".new-123")
			os.Mkdir(half, 0o755)
			du, err := s.DiskUsage()
			if err != nil {
				t.Fatal(err)
			}
			if du.CacheMounts.Count != 3 || du.CacheMounts.Reclaimable != du.CacheMounts.Size {
				t.Errorf("du: %+v", du.CacheMounts)
			}
			rep, err := s.Prune(context.Background(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, n := range []string{"a", "b", "c"} {
				_, err := os.Stat(dirs[n])
				_, lockErr := os.Stat(dirs[n] + ".lock")
				if (err == nil) != (lockErr == nil) {
					t.Errorf("%s: instance %v, lock file %v", n, err, lockErr)
				}
				if err == nil {
					left = append(left, n)
				}
			}
			if fmt.Sprint(left) != tc.left {
				t.Errorf("cache mounts left %v, want %s", left, tc.left)
			}
			if rep.CacheMounts != 3-len(left) {
				t.Errorf("report: %d cache mounts removed", rep.CacheMounts)
			}
			if _, err := os.Stat(half); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("half-made cache mount kept: %v", err)
			}
		})
	}
}

// TestPruneKeepsDebugStates: the layers under a state kept for kiln debug
// survive prune --all until the state is removed.
func TestPruneKeepsDebugStates(t *testing.T) {
	requireRoot(t)
	f := newPruneFixture(t)
	state := filepath.Join(f.s.Root, "debug", "20261205-190000-abcdef", "step-1")
	if err := os.MkdirAll(filepath.Join(state, "upper"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf(`{"step":"RUN false","lowers":[%q,%q],"upper":%q}`, f.layers["loose"].Dir, f.layers["old"].Dir, filepath.Join(state, "upper"))
	if err := os.WriteFile(filepath.Join(state, "state.json"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if du, err := f.s.DiskUsage(); err != nil || du.Debug.Count != 1 || du.Debug.Reclaimable != 0 {
		t.Errorf("du: %+v, %v", du.Debug, err)
	}
	if _, err := f.s.Prune(context.Background(), PruneOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	if layers, _ := f.present(t); fmt.Sprint(layers) != "[image loose old]" {
		t.Errorf("with a kept debug state, layers left: %v", layers)
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("prune removed the debug state: %v", err)
	}
	os.RemoveAll(filepath.Dir(state)) // kiln debug --rm
	if _, err := f.s.Prune(context.Background(), PruneOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	if layers, _ := f.present(t); fmt.Sprint(layers) != "[image]" {
		t.Errorf("after the state is removed, layers left: %v", layers)
	}
}
