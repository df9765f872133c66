package cache

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// listTree describes every entry below dir: type, mode, owner, content
// digest or link target, and which entries share an inode.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	inodes := map[uint64]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					line += " =" + first
				} else {
					inodes[st.Ino] = rel
				}
			}
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// tarNames lists the entries of a stored gzip layer blob.
func tarNames(t *testing.T, s *Store, l LayerInfo) []string {
	t.Helper()
	f, err := os.Open(s.blobPath(l.Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
	sort.Strings(out)
	return out
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCacheMountSnapshot: an instance's first snapshot is one layer of
// the whole; the next holds only what changed (whiteouts for what went,
// one for a removed directory, none below it); an unchanged instance adds
// nothing; and another store seeded with the layers has the same tree.
func TestCacheMountSnapshot(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	dir, release, err := s.CacheMount(ctx, "mods", CacheShared, CacheMountInit{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"a": "a1", "d/b": "b", "d/e/f": "f", "del": "x", "deldir/x": "x", "hard1": "h", "same/s": "s"})
	must(t, os.Link(filepath.Join(dir, "hard1"), filepath.Join(dir, "hard2")))
	must(t, os.Symlink("../etc/passwd", filepath.Join(dir, "link")))
	release()

	first, ok, err := s.SnapshotCacheMount(ctx, "mods", MountSnapshotOptions{})
	if err != nil || !ok || len(first.Layers) != 1 || first.Added.Digest != first.Layers[0].Digest {
		t.Fatalf("first snapshot: %+v, %v, %v", first, ok, err)
	}

	writeFiles(t, dir, map[string]string{"a": "a2", "d/new": "n", "n1": "n", "ro/mod/f": "go"})
	must(t, os.Chmod(filepath.Join(dir, "ro/mod/f"), 0o444))
	must(t, os.Chmod(filepath.Join(dir, "ro/mod"), 0o555))
	must(t, os.Remove(filepath.Join(dir, "del")))
	must(t, os.RemoveAll(filepath.Join(dir, "deldir")))
	must(t, os.RemoveAll(filepath.Join(dir, "d/e")))
	writeFiles(t, dir, map[string]string{"d/e": "now a file"})
	must(t, os.Chmod(filepath.Join(dir, "d/b"), 0o600))
	must(t, os.Link(filepath.Join(dir, "n1"), filepath.Join(dir, "n2")))

	second, ok, err := s.SnapshotCacheMount(ctx, "mods", MountSnapshotOptions{})
	if err != nil || !ok || len(second.Layers) != 2 || second.Layers[0] != first.Layers[0] {
		t.Fatalf("second snapshot: %+v, %v, %v", second, ok, err)
	}
	got := tarNames(t, s, second.Layers[1])
	want := []string{".wh.del", ".wh.deldir", "a", "d/", "d/b", "d/e", "d/new", "n1", "n2", "ro/", "ro/mod/", "ro/mod/f"}
	if !slices.Equal(got, want) {
		t.Errorf("the diff layer holds %q, want %q", got, want)
	}

	third, ok, err := s.SnapshotCacheMount(ctx, "mods", MountSnapshotOptions{})
	if err != nil || !ok || !slices.Equal(third.Layers, second.Layers) || third.Added.Digest.Hex != "" {
		t.Errorf("an unchanged instance: %+v, %v, %v; want the same layers, none added", third, ok, err)
	}

	// Another store restores the instance from the layers.
	other := openStore(t)
	seed := make([]LayerInfo, len(second.Layers))
	for i, l := range second.Layers {
		seed[i] = LayerInfo{DiffID: l.DiffID, Digest: l.Digest, Size: l.Size, MediaType: l.MediaType, Remote: s.Layer(l, "")}
	}
	dir2, release2, err := other.CacheMount(ctx, "mods", CacheShared, CacheMountInit{Mode: 0o755, Seed: seed,
		SeedFailed: func(err error) { t.Errorf("seeding: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	release2()
	if a, b := listTree(t, dir), listTree(t, dir2); a != b {
		t.Errorf("restored tree differs:\n%s\n--- want\n%s", b, a)
	}
	// Its state is the seed: a snapshot there adds nothing.
	snap, ok, err := other.SnapshotCacheMount(ctx, "mods", MountSnapshotOptions{})
	if err != nil || !ok || len(snap.Layers) != 2 || snap.Added.Digest.Hex != "" {
		t.Errorf("snapshot of the restored instance: %+v, %v, %v; want its 2 layers, none added", snap, ok, err)
	}

	// A seed that fails its digest leaves a new instance empty.
	bad := seed[:1:1]
	bad[0].Digest.Hex = strings.Repeat("0", 64)
	third2 := openStore(t)
	var failed error
	dir3, release3, err := third2.CacheMount(ctx, "mods", CacheShared, CacheMountInit{Mode: 0o755, Seed: bad, SeedFailed: func(err error) { failed = err }})
	if err != nil {
		t.Fatal(err)
	}
	release3()
	if failed == nil {
		t.Error("a seed with the wrong digest was not refused")
	}
	if ents, _ := os.ReadDir(dir3); len(ents) != 0 {
		t.Errorf("the instance of a refused seed holds %d entries, want none", len(ents))
	}
}

// TestCacheMountSnapshotSquash: a list that would grow past MaxLayers is
// replaced by one layer of the whole; Full asks for that at once.
func TestCacheMountSnapshotSquash(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	dir, release, err := s.CacheMount(ctx, "id", CacheShared, CacheMountInit{})
	must(t, err)
	release()
	opt := MountSnapshotOptions{MaxLayers: 3}
	for i, want := range []int{1, 2, 3, 1, 2} {
		writeFiles(t, dir, map[string]string{fmt.Sprintf("f%d", i): "x"})
		snap, ok, err := s.SnapshotCacheMount(ctx, "id", opt)
		if err != nil || !ok || len(snap.Layers) != want {
			t.Fatalf("snapshot %d: %d layers (%v, %v), want %d", i, len(snap.Layers), ok, err, want)
		}
		if want == opt.MaxLayers {
			// full, but unchanged: no squash, nothing added
			again, _, err := s.SnapshotCacheMount(ctx, "id", opt)
			if err != nil || len(again.Layers) != want || again.Added.Digest.Hex != "" {
				t.Errorf("unchanged at the limit: %+v, %v", again, err)
			}
		}
		if want == 1 && len(tarNames(t, s, snap.Layers[0])) != i+1 {
			t.Errorf("snapshot %d: the one layer holds %q, want all %d files", i, tarNames(t, s, snap.Layers[0]), i+1)
		}
	}
	snap, _, err := s.SnapshotCacheMount(ctx, "id", MountSnapshotOptions{Full: true})
	if err != nil || len(snap.Layers) != 1 || len(tarNames(t, s, snap.Layers[0])) != 5 {
		t.Errorf("Full: %+v, %v", snap, err)
	}
	if _, ok, err := s.SnapshotCacheMount(ctx, "no such id", opt); ok || err != nil {
		t.Errorf("a mount without instance: %v, %v", ok, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPrepareCacheMount: an instance prepared ahead is seeded and is the
// one the step then gets, under each sharing mode; an instance that
// exists or is held by another user is left alone; a cancelled prepare
// leaves no instance (an empty one would pass for warm); a seed that
// fails only warns and leaves an empty instance, as at the step.
func TestPrepareCacheMount(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	src := openStore(t)
	dir, release, err := src.CacheMount(ctx, "mods", CacheShared, CacheMountInit{})
	must(t, err)
	writeFiles(t, dir, map[string]string{"warm": "yes", "d/f": "f"})
	release()
	snap, ok, err := src.SnapshotCacheMount(ctx, "mods", MountSnapshotOptions{})
	if err != nil || !ok {
		t.Fatalf("snapshot: %v, %v", ok, err)
	}
	seedOf := func() []LayerInfo {
		out := make([]LayerInfo, len(snap.Layers))
		for i, l := range snap.Layers {
			out[i] = LayerInfo{DiffID: l.DiffID, Digest: l.Digest, Size: l.Size, MediaType: l.MediaType, Remote: src.Layer(l, "")}
		}
		return out
	}
	noFail := func(err error) { t.Errorf("seeding: %v", err) }

	for _, sharing := range []CacheSharing{CacheShared, CachePrivate, CacheLocked} {
		s := openStore(t)
		must(t, s.PrepareCacheMount(ctx, "mods", sharing, CacheMountInit{Mode: 0o755, Seed: seedOf(), SeedFailed: noFail}))
		// The step's own seed would fail: it must not be needed.
		bad := seedOf()
		bad[0].Digest.Hex = strings.Repeat("0", 64)
		dir, release, err := s.CacheMount(ctx, "mods", sharing, CacheMountInit{Mode: 0o755, Seed: bad, SeedFailed: noFail})
		must(t, err)
		if b, err := os.ReadFile(filepath.Join(dir, "warm")); err != nil || string(b) != "yes" {
			t.Errorf("sharing %d: the step's instance is not the prepared one (%q, %v)", sharing, b, err)
		}
		if dir != s.cacheMountBase("mods") {
			t.Errorf("sharing %d: the step got %s, want the first instance", sharing, dir)
		}
		// Prepared again while the step holds it, or once it exists:
		// nothing happens.
		must(t, s.PrepareCacheMount(ctx, "mods", sharing, CacheMountInit{Seed: bad, SeedFailed: noFail}))
		release()
		must(t, s.PrepareCacheMount(ctx, "mods", sharing, CacheMountInit{Seed: bad, SeedFailed: noFail}))
		if snap2, _, err := s.SnapshotCacheMount(ctx, "mods", MountSnapshotOptions{}); err != nil || !slices.Equal(snap2.Layers, snap.Layers) || snap2.Added.Digest.Hex != "" {
			t.Errorf("sharing %d: the prepared instance's state is not its seed: %+v, %v", sharing, snap2, err)
		}
	}

	// Busy: another user holds the (not yet made) instance's lock.
	s := openStore(t)
	must(t, os.MkdirAll(s.cacheMountsDir(), 0o755))
	l, ok, err := tryLockFile(s.cacheMountBase("mods")+".lock", true)
	if err != nil || !ok {
		t.Fatalf("locking: %v, %v", ok, err)
	}
	must(t, s.PrepareCacheMount(ctx, "mods", CacheShared, CacheMountInit{Seed: seedOf(), SeedFailed: noFail}))
	l.release()
	if _, err := os.Lstat(s.cacheMountBase("mods")); err == nil {
		t.Error("an instance was made under another user's lock")
	}

	// Cancelled: no instance at all.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = s.PrepareCacheMount(cctx, "mods", CacheShared, CacheMountInit{Seed: seedOf(), SeedFailed: func(error) {}})
	if err == nil {
		t.Error("a cancelled prepare succeeded")
	}
	if _, err := os.Lstat(s.cacheMountBase("mods")); err == nil {
		t.Error("a cancelled prepare left an instance")
	}

	// A seed that fails: told, and an empty instance.
	bad := seedOf()
	bad[0].Digest.Hex = strings.Repeat("0", 64)
	var failed error
	must(t, s.PrepareCacheMount(ctx, "mods", CacheLocked, CacheMountInit{Seed: bad, SeedFailed: func(err error) { failed = err }}))
	if failed == nil {
		t.Error("a seed with the wrong digest was not refused")
	}
	if ents, err := os.ReadDir(s.cacheMountBase("mods")); err != nil || len(ents) != 0 {
		t.Errorf("the instance of a refused seed: %d entries, %v; want an empty one", len(ents), err)
	}
}
