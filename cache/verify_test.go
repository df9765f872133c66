package cache

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// verifyFixture is a store with two built layers ("a" used by the image
// app and a step record, "b" by a step record only) and a pulled one
// ("pulled", by a step record).
type verifyFixture struct {
	s      *Store
	layers map[string]LayerInfo
	steps  map[string]string // layer name → step key
	pulled *bytesLayer
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	ctx := context.Background()
	f := &verifyFixture{s: openStore(t), layers: map[string]LayerInfo{}, steps: map[string]string{}}
	for _, n := range []string{"a", "b"} {
		dir, err := f.s.TempDir("upper-")
		if err != nil {
			t.Fatal(err)
		}
		buildTree(t, dir)
		os.WriteFile(filepath.Join(dir, "which"), []byte(n), 0o644)
		info, _, err := f.s.CommitDir(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		f.layers[n] = info
	}
	plain := sampleTar(t)
	f.pulled = &bytesLayer{compressed: gzipBytes(t, plain), diffID: sha256Of(plain), mt: types.OCILayer}
	info, err := f.s.PullLayer(ctx, f.pulled)
	if err != nil {
		t.Fatal(err)
	}
	f.layers["pulled"] = info
	for i, n := range []string{"a", "b", "pulled"} {
		key := fmt.Sprintf("%064x", i+1)
		if err := f.s.PutStep(key, StepRecord{DiffID: f.layers[n].DiffID}); err != nil {
			t.Fatal(err)
		}
		f.steps[n] = key
	}
	img, err := mutate.AppendLayers(empty.Image, f.s.Layer(f.layers["a"], ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.PutImage(ctx, []string{"app"}, img); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestVerify: each kind of damage is found, named, and with Repair removed
// together with what depends on it; the store then verifies clean and the
// damaged entries are misses, so the next build fetches or rebuilds them.
func TestVerify(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *verifyFixture)
		// problems: "kind what" substrings, in order
		problems []string
		// gone: layers whose step record is a miss after repair
		gone []string
	}{
		{"clean", func(*testing.T, *verifyFixture) {}, nil, nil},
		{"truncated blob", func(t *testing.T, f *verifyFixture) {
			p := f.s.blobPath(f.layers["b"].Digest)
			if err := os.Truncate(p, 100); err != nil {
				t.Fatal(err)
			}
		}, []string{"blob content has digest", "layer its blob"}, []string{"b"}},
		{"file deleted from a layer", func(t *testing.T, f *verifyFixture) {
			if err := os.Remove(filepath.Join(f.layers["pulled"].Dir, "etc", "shadow")); err != nil {
				t.Fatal(err)
			}
		}, []string{"layer fs/ differs"}, []string{"pulled"}},
		{"file changed in a layer", func(t *testing.T, f *verifyFixture) {
			if err := os.Chmod(filepath.Join(f.layers["b"].Dir, "which"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"layer fs/ differs"}, []string{"b"}},
		{"file added to a layer", func(t *testing.T, f *verifyFixture) {
			if err := os.WriteFile(filepath.Join(f.layers["b"].Dir, "intruder"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"layer fs/ differs"}, []string{"b"}},
		{"layer without info.json", func(t *testing.T, f *verifyFixture) {
			if err := os.Remove(filepath.Join(filepath.Dir(f.layers["b"].Dir), "info.json")); err != nil {
				t.Fatal(err)
			}
		}, []string{"layer info.json unreadable"}, []string{"b"}},
		{"unreadable image record", func(t *testing.T, f *verifyFixture) {
			if err := os.WriteFile(f.s.imagePath("docker.io/library/broken:latest"), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"image unreadable record"}, nil},
		{"unreadable step record", func(t *testing.T, f *verifyFixture) {
			if err := os.WriteFile(f.s.stepPath(strings.Repeat("e", 64)), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"step unreadable record"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newVerifyFixture(t)
			tc.damage(t, f)
			check := func(rep VerifyReport) {
				t.Helper()
				var got []string
				for _, p := range rep.Problems {
					got = append(got, p.Kind+" "+p.What+" "+strings.Join(p.Details, " "))
				}
				if len(got) != len(tc.problems) {
					t.Fatalf("problems %q, want %q", got, tc.problems)
				}
				for i, w := range tc.problems {
					if !strings.Contains(got[i], w) {
						t.Errorf("problem %d: %q, want %q", i, got[i], w)
					}
				}
			}
			rep, err := f.s.Verify(ctx, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			check(rep)
			if rep.Blobs == 0 || rep.Layers != 3 || rep.Images == 0 || rep.Steps == 0 || len(rep.Unchecked) != 0 {
				t.Errorf("report %+v", rep)
			}
			rep, err = f.s.Verify(ctx, VerifyOptions{Repair: true})
			if err != nil {
				t.Fatal(err)
			}
			check(rep)
			for _, p := range rep.Problems {
				if !p.Repaired {
					t.Errorf("%+v not repaired", p)
				}
			}
			rep, err = f.s.Verify(ctx, VerifyOptions{})
			if err != nil || len(rep.Problems) != 0 {
				t.Errorf("after repair: %+v, %v", rep.Problems, err)
			}
			for n, key := range f.steps {
				_, hit, err := f.s.Step(key)
				if err != nil {
					t.Fatal(err)
				}
				wantHit := !strings.Contains(fmt.Sprint(tc.gone), n)
				if hit != wantHit {
					t.Errorf("step of layer %s: hit %v, want %v", n, hit, wantHit)
				}
			}
			// what was dropped comes back with the next pull
			if _, err := f.s.PullLayer(ctx, f.pulled); err != nil {
				t.Fatal(err)
			}
			if rep, err := f.s.Verify(ctx, VerifyOptions{}); err != nil || len(rep.Problems) != 0 {
				t.Errorf("after pulling again: %+v, %v", rep.Problems, err)
			}
		})
	}
}

// TestVerifyOldLayer: a layer without a contents list (stored by an older
// kiln) is named as unchecked, not as a problem.
func TestVerifyOldLayer(t *testing.T) {
	requireRoot(t)
	f := newVerifyFixture(t)
	os.Remove(filepath.Join(filepath.Dir(f.layers["b"].Dir), contentsFile))
	rep, err := f.s.Verify(context.Background(), VerifyOptions{})
	if err != nil || len(rep.Problems) != 0 || len(rep.Unchecked) != 1 || rep.Unchecked[0] != f.layers["b"].DiffID.String() {
		t.Errorf("%+v, %v", rep, err)
	}
}

// TestDamagedBlobReplaced: a blob that fails its digest when read is
// removed, so that the next pull stores it again; and a pull (or load)
// replaces a damaged blob it finds in place instead of keeping it.
func TestDamagedBlobReplaced(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	f := newVerifyFixture(t)
	info := f.layers["pulled"]
	blob := f.s.blobPath(info.Digest)
	good, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	damage := func() {
		t.Helper()
		bad := append([]byte(nil), good...)
		bad[len(bad)/2] ^= 0xff // same size, wrong bytes
		if err := os.WriteFile(blob, bad, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// on use
	damage()
	rc, err := f.s.Layer(info, "").Compressed()
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("reading a damaged blob: %v, want an error saying so", err)
	}
	if _, ok, _ := f.s.LayerByDiffID(info.DiffID); ok {
		t.Error("the layer of a damaged blob still counts as stored")
	}
	if _, err := f.s.PullLayer(ctx, f.pulled); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(blob); err != nil || string(got) != string(good) {
		t.Errorf("blob not replaced by the pull: %v", err)
	}

	// on a write collision: a pull finds the damaged blob in place
	damage()
	if err := os.RemoveAll(filepath.Dir(info.Dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.PullLayer(ctx, f.pulled); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(blob); err != nil || string(got) != string(good) {
		t.Errorf("damaged blob kept by a pull of the same digest: %v", err)
	}

	// small blobs (manifests, configs) are checked when written again
	img, _, err := f.s.Image("app")
	if err != nil {
		t.Fatal(err)
	}
	manifest := f.s.blobPath(digestOf(t, img))
	if err := os.WriteFile(manifest, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.s.PutImage(ctx, []string{"app"}, img); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := f.s.Image("app"); err != nil || !ok {
		t.Errorf("image after its manifest was written again: %v %v", ok, err)
	}
}

// TestStoredBlobVerifiesItsDigest: a stored layer's compressed reader
// says which digest it checks (so an export does not hash it again), and
// fails at its end when the bytes on disk do not have it.
func TestStoredBlobVerifiesItsDigest(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	dir, err := s.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	buildTree(t, dir)
	info, _, err := s.CommitDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	read := func() error {
		rc, err := s.Layer(info, types.OCILayer).Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		v, ok := rc.(interface{ VerifiesDigest() v1.Hash })
		if !ok || v.VerifiesDigest() != info.Digest {
			t.Fatalf("reader %T does not say it verifies %s", rc, info.Digest)
		}
		_, err = io.Copy(io.Discard, rc)
		return err
	}
	if err := read(); err != nil {
		t.Fatalf("reading the intact blob: %v", err)
	}
	p := s.blobPath(info.Digest)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := read(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("reading the damaged blob: %v, want an error saying it is damaged", err)
	}
}

// TestCommitContentsFromTarWalk: the contents list a commit writes from
// its tar walk holds the very lines a separate lstat walk of fs/ gives
// (in the tar's order), for every kind of entry.
func TestCommitContentsFromTarWalk(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	dir, err := s.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	buildTree(t, dir)
	if err := unix.Mkfifo(filepath.Join(dir, "home/app/fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "usr/bin/dev"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 3))); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../a \"quoted\" target", filepath.Join(dir, "usr/bin/odd name")); err != nil {
		t.Fatal(err)
	}
	info, _, err := s.CommitDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(filepath.Dir(info.Dir), contentsFile))
	if err != nil {
		t.Fatal(err)
	}
	want, err := listContents(info.Dir)
	if err != nil {
		t.Fatal(err)
	}
	sorted := func(b []byte) string {
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	if sorted(got) != sorted(want) {
		t.Errorf("contents list from the tar walk:\n%s\nwant (lstat walk of fs/):\n%s", got, want)
	}
	if diffs, err := checkContents(filepath.Dir(info.Dir)); err != nil || len(diffs) > 0 {
		t.Errorf("checking the committed layer: %v %v", diffs, err)
	}
}
