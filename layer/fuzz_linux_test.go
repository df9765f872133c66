package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// The fuzz targets feed arbitrary tar bytes to the applier, one per sink
// (and the flattened sink once more with ADD's options). The invariant:
// no panic, and nothing outside the root changes — the root is a directory
// beside a canary directory holding a file, and the seeds aim symlinks,
// hardlinks, whiteouts and opaque markers at that canary. They run without
// root too: what needs privileges then fails inside the applier.

func FuzzApplyLayerDir(f *testing.F) { fuzzApply(f, Options{Sink: LayerDir}) }

func FuzzApplyRootfs(f *testing.F) {
	fuzzApply(f, Options{
		Sink:         Rootfs,
		ImplicitDir:  &tar.Header{Mode: 0o755, ModTime: time.Unix(0, 0)},
		Unprivileged: os.Geteuid() != 0,
	})
}

func FuzzApplyArchive(f *testing.F) {
	fuzzApply(f, Options{
		Sink: Rootfs, LiteralWhiteouts: true, RootEntry: true, LiteralParents: true,
		BestEffortXattrs: true, ClampTimes: true, LinkMeta: true, Owner: &Owner{UID: os.Geteuid(), GID: os.Getegid()},
	})
}

// maxFuzzFile bounds what one input may make the applier write: a GNU
// sparse header can declare petabytes in a few bytes (bounding that is
// the caller's job, with the uncompressed-size limit of a pull).
const maxFuzzFile = 1 << 20

func fuzzApply(f *testing.F, opts Options) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s.data)
	}
	// tmpfs when there is one: every input makes and removes a tree, and
	// a disk's journal would make that the whole cost.
	tmp := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() && unix.Access("/dev/shm", unix.W_OK) == nil {
		tmp = "/dev/shm"
	}
	base, err := os.MkdirTemp(tmp, "kiln-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { forceRemove(base) })
	canary := filepath.Join(base, "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "file"), []byte("canary"), 0o644); err != nil {
		f.Fatal(err)
	}
	unix.Lsetxattr(canary, "user.canary", []byte("1"), 0)
	old := time.Unix(1500000000, 0)
	for _, p := range []string{filepath.Join(canary, "file"), canary, base} {
		if err := os.Chtimes(p, old, old); err != nil {
			f.Fatal(err)
		}
	}
	want := snapshot(f, base)

	f.Fuzz(func(t *testing.T, data []byte) {
		if !boundedTar(data) {
			t.Skip("declares more content than the fuzz bound")
		}
		dir := filepath.Join(base, "root")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		defer func() {
			forceRemove(dir)
			os.Chtimes(base, old, old) // making and removing root changed it
		}()
		root, err := rooted.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		a := NewApplier(root, opts)
		if err := a.Apply(context.Background(), bytes.NewReader(data)); err == nil {
			_ = a.Finish(root)
		}
		a.Close()
		root.Close()
		got := snapshot(t, base)
		for p, w := range want {
			if p == "." {
				continue // base itself: root was made in it
			}
			if got[p] != w {
				t.Fatalf("outside the root, %s changed:\n got %s\nwant %s", p, got[p], w)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok && p != "root" && !strings.HasPrefix(p, "root/") {
				t.Fatalf("outside the root, %s appeared", p)
			}
		}
	})
}

// boundedTar reports whether every entry of data declares at most
// maxFuzzFile bytes (or data is not a readable tar at all).
func boundedTar(data []byte) bool {
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err != nil {
			return true
		}
		if hdr.Size > maxFuzzFile {
			return false
		}
	}
}

// snapshot describes every path under base outside base/root: type, mode,
// owner, size, link count, mtime, content or target, the canary xattr.
func snapshot(t testing.TB, base string) map[string]string {
	out := map[string]string{}
	filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(base, p)
		if rel == "root" {
			return filepath.SkipDir
		}
		if err != nil {
			out[rel] = err.Error()
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%v %d:%d size=%d nlink=%d mtime=%d.%d", fi.Mode(), st.Uid, st.Gid, st.Size, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec)
		buf := make([]byte, 64)
		if n, err := unix.Lgetxattr(p, "user.canary", buf); err == nil {
			s += " xattr=" + string(buf[:n])
		}
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			s += fmt.Sprintf(" %q", b)
		}
		out[rel] = s
		return nil
	})
	return out
}

// forceRemove removes a tree whatever modes the applier left in it.
func forceRemove(dir string) {
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	os.RemoveAll(dir)
}

type fuzzSeed struct {
	name string
	data []byte
}

// fuzzSeeds are crafted tars, each aiming at one escape class.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	long := strings.Repeat("d/", 600) + "f" // 1201 bytes, 601 levels
	longer := strings.Repeat("abcdefghij/", 400) + "f"
	mk := func(entries ...tarEntry) []byte { return makeTar(t, entries) }
	reg := func(name, data string) tarEntry { return tarEntry{name: name, typ: tar.TypeReg, data: data} }
	dirE := func(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir} }
	sym := func(name, target string) tarEntry { return tarEntry{name: name, typ: tar.TypeSymlink, link: target} }
	hard := func(name, target string) tarEntry { return tarEntry{name: name, typ: tar.TypeLink, link: target} }
	return []fuzzSeed{
		{"dotdot", mk(reg("../canary/file", "x"), reg("a/../../canary/x", "x"), reg("../../../../../../../../tmp/kiln-fuzz-escape", "x"))},
		{"absolute", mk(reg("/canary/file", "x"), reg("/../canary/y", "x"), dirE("/"))},
		{"hardlink-out", mk(hard("l", "../canary/file"), hard("m", "/../../canary/file"))},
		{"hardlink-through-symlink", mk(sym("a", "../canary"), hard("l", "a/file"), reg("l", "overwritten"))},
		{"hardlink-to-dir", mk(dirE("d/"), hard("l", "d"), hard("r", "/"), hard("s", "."))},
		{"symlink-write-through", mk(sym("a", "../canary"), reg("a/file", "x"), reg("a/new", "x"))},
		{"symlink-abs-write-through", mk(sym("a", "/"), reg("a/canary/file", "x"), sym("b", "/.."), reg("b/../canary/file", "x"))},
		{"symlink-dotdot-chain", mk(sym("u", "../../../../../.."), dirE("u/canary/"), reg("u/canary/file", "x"), sym("v", "u/u/u"), reg("v/x", "x"))},
		{"dir-swap", mk(dirE("a/"), tarEntry{name: "a/x/", typ: tar.TypeDir, mode: 0o777, uid: 1234, gid: 1234}, reg(".wh.a", ""), sym("a", "../canary"))},
		{"dir-swap-same-layer", mk(dirE("a/"), tarEntry{name: "a/file", typ: tar.TypeReg, mode: 0o777}, sym("a", "../canary"), dirE("a/"))},
		{"whiteout-dotdot", mk(reg(".wh..", ""), reg(".wh...", ""), reg("a/.wh..", ""), reg("../.wh.canary", ""), reg(".wh../canary", ""))},
		{"whiteout-through-symlink", mk(sym("a", "../canary"), reg("a/.wh.file", ""), sym("b", "/.."), reg("b/.wh.canary", ""))},
		{"opaque-through-symlink", mk(sym("a", "../canary"), reg("a/.wh..wh..opq", ""), reg(".wh..wh..opq", ""), reg("../.wh..wh..opq", ""))},
		{"opaque-order", mk(dirE("o/"), reg("o/keep", "k"), dirE("o/sub/"), reg("o/sub/deep", "d"), reg("o/.wh..wh..opq", ""), reg("o/after", "a"))},
		{"devices", mk(
			tarEntry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
			tarEntry{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660},
			tarEntry{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
			reg("fifo", "replaces the fifo, never opens it"),
			tarEntry{name: "fifo2", typ: tar.TypeFifo, mode: 0o600},
			hard("fifo3", "fifo2"),
		)},
		{"long-names", mk(reg(long, "deep"), reg(longer, "long"), reg(strings.Repeat("n", 300), "too long a component"), sym("s", strings.Repeat("t", 5000)))},
		{"xattrs", mk(
			tarEntry{name: "big", typ: tar.TypeReg, pax: map[string]string{paxXattr + "user.big": strings.Repeat("x", MaxXattrSize+1)}},
			tarEntry{name: "ok", typ: tar.TypeReg, pax: map[string]string{paxXattr + "user.ok": "1", paxXattr + "trusted.overlay.opaque": "y"}},
		)},
		{"symlink-loop", mk(sym("l", "l"), reg("l/x", "x"), sym("m", "n"), sym("n", "m"), reg("m/x", "x"))},
		{"modes", mk(tarEntry{name: "ro/", typ: tar.TypeDir, mode: 0o555}, reg("ro/x", "x"), tarEntry{name: "s", typ: tar.TypeReg, mode: 0o6755, uid: 4242})},
	}
}

// TestWriteFuzzSeeds writes the seeds, with -update, to testdata/fuzz,
// where the fuzz engine (and a plain go test run) picks them up.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("writes seed files only with -update")
	}
	for _, target := range []string{"FuzzApplyLayerDir", "FuzzApplyRootfs", "FuzzApplyArchive"} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range fuzzSeeds(t) {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.data)
			if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
