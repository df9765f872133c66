package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// applyAll applies each tar, in order, to a fresh root with opts and runs
// Finish; it returns the root's host path and the first error.
func applyAll(t *testing.T, opts Options, tars ...[]byte) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forceRemove(dir) })
	root, err := rooted.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	a := NewApplier(root, opts)
	defer a.Close()
	for _, b := range tars {
		if err := a.Apply(context.Background(), bytes.NewReader(b)); err != nil {
			return dir, err
		}
	}
	return dir, a.Finish(root)
}

var sinks = []struct {
	name string
	opts Options
}{
	{"layer", Options{Sink: LayerDir}},
	{"rootfs", Options{Sink: Rootfs, Unprivileged: os.Geteuid() != 0}},
	// ADD runs as root; as another user, owning everything avoids EPERM.
	{"archive", Options{Sink: Rootfs, LiteralWhiteouts: true, RootEntry: true, LiteralParents: true, BestEffortXattrs: true, ClampTimes: true, LinkMeta: true,
		Owner: &Owner{UID: os.Geteuid(), GID: os.Getegid()}}},
}

// TestApplyHardening: what each sink does with hostile or extreme
// entries, beyond containment (TestUnpackEscapes, the fuzz seeds).
func TestApplyHardening(t *testing.T) {
	deep := strings.Repeat("d/", maxDepth-1) + "f" // the most levels allowed
	wide := strings.Repeat("abcdefghij/", 450) + "f"
	tests := []struct {
		name    string
		entries []tarEntry
		wantErr string            // for every sink
		files   map[string]string // path → content, for every sink
		root    bool              // needs root (chown, mknod, trusted xattrs)
	}{
		{name: "very deep path", entries: []tarEntry{{name: deep, typ: tar.TypeReg, data: "deep"}},
			files: map[string]string{deep: "deep"}},
		{name: "path past PATH_MAX", entries: []tarEntry{{name: wide, typ: tar.TypeReg, data: "wide"}},
			files: map[string]string{wide: "wide"}},
		{name: "too deep", entries: []tarEntry{{name: strings.Repeat("d/", maxDepth+1) + "f", typ: tar.TypeReg}},
			wantErr: "directory levels"},
		{name: "component too long", entries: []tarEntry{{name: strings.Repeat("n", 256), typ: tar.TypeReg}},
			wantErr: "file name too long"},
		{name: "xattr too large", entries: []tarEntry{{name: "f", typ: tar.TypeReg,
			pax: map[string]string{paxXattr + "user.big": strings.Repeat("x", MaxXattrSize+1)}}},
			wantErr: "more than the 65536"},
		{name: "too many xattrs", entries: []tarEntry{{name: "f", typ: tar.TypeReg, pax: manyXattrs(MaxXattrCount + 1)}},
			wantErr: "more than 128 extended attributes"},
		{name: "hardlink to a directory", entries: []tarEntry{{name: "d/", typ: tar.TypeDir}, {name: "l", typ: tar.TypeLink, link: "d"}},
			wantErr: "is a directory"},
		{name: "hardlink to the root", entries: []tarEntry{{name: "l", typ: tar.TypeLink, link: "../"}},
			wantErr: "hardlink to the root directory"},
		{name: "hardlink to nothing", entries: []tarEntry{{name: "l", typ: tar.TypeLink, link: "nowhere"}},
			wantErr: "does not exist"},
		{name: "file over a fifo is not opened", root: true, entries: []tarEntry{
			{name: "p", typ: tar.TypeFifo, mode: 0o600}, {name: "p", typ: tar.TypeReg, data: "plain"}},
			files: map[string]string{"p": "plain"}},
		{name: "dir over a symlink replaces it", entries: []tarEntry{
			{name: "d", typ: tar.TypeSymlink, link: "/"}, {name: "d/", typ: tar.TypeDir}, {name: "d/f", typ: tar.TypeReg, data: "in d"}},
			files: map[string]string{"d/f": "in d"}},
		{name: "dir over a file replaces it", entries: []tarEntry{
			{name: "d", typ: tar.TypeReg}, {name: "d/", typ: tar.TypeDir}, {name: "d/f", typ: tar.TypeReg, data: "in d"}},
			files: map[string]string{"d/f": "in d"}},
		{name: "long symlink target", entries: []tarEntry{{name: "s", typ: tar.TypeSymlink, link: strings.Repeat("t", 5000)}},
			wantErr: "file name too long"},
	}
	for _, sink := range sinks {
		for _, tc := range tests {
			t.Run(sink.name+"/"+tc.name, func(t *testing.T) {
				if (tc.root || sink.opts.Sink == LayerDir) && os.Geteuid() != 0 {
					testutil.SkipHost(t, "needs root: mknod, chown")
				}
				dir, err := applyAll(t, sink.opts, makeTar(t, tc.entries))
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
					}
					if strings.Contains(err.Error(), dir) {
						t.Errorf("error names the host path: %v", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				for p, want := range tc.files {
					got, err := readDeep(dir, p)
					if err != nil || got != want {
						t.Errorf("%.40s…: %q %v, want %q", p, got, err, want)
					}
				}
			})
		}
	}
}

func manyXattrs(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[paxXattr+"user.x"+strings.Repeat("y", i)] = "1"
	}
	return m
}

// readDeep reads a file by descending fd by fd: its path may be longer
// than PATH_MAX.
func readDeep(dir, p string) (string, error) {
	root, err := rooted.Open(dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	d, err := root.OpenDir(filepath.Dir(p))
	if err != nil {
		return "", err
	}
	defer d.Close()
	b, err := d.ReadFile(filepath.Base(p), 1<<20)
	return string(b), err
}

// TestRootfsOpaque: an opaque marker hides what earlier tars made, keeps
// what the same tar wrote before it (implicit parents included), and
// never reaches through a symlink.
func TestRootfsOpaque(t *testing.T) {
	opts := Options{Sink: Rootfs, Unprivileged: os.Geteuid() != 0}
	lower := makeTar(t, []tarEntry{
		{name: "o/", typ: tar.TypeDir}, {name: "o/old", typ: tar.TypeReg}, {name: "o/sub/", typ: tar.TypeDir},
		{name: "o/sub/old", typ: tar.TypeReg}, {name: "keep/", typ: tar.TypeDir}, {name: "keep/x", typ: tar.TypeReg},
	})
	upper := makeTar(t, []tarEntry{
		{name: "o/sub/new", typ: tar.TypeReg},
		{name: "o/implicit/deep/f", typ: tar.TypeReg},
		{name: "o/.wh..wh..opq", typ: tar.TypeReg},
		{name: "o/after", typ: tar.TypeReg},
		{name: "l", typ: tar.TypeSymlink, link: "/keep"},
		{name: "l/.wh..wh..opq", typ: tar.TypeReg},
	})
	dir, err := applyAll(t, opts, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, rel)
		}
		return nil
	})
	want := []string{"keep", "l", "o", "o/after", "o/implicit", "o/implicit/deep", "o/implicit/deep/f", "o/sub", "o/sub/new"}
	if !slices.Equal(got, want) {
		t.Errorf("tree %v, want %v (keep/x goes: the marker through l applies to /keep inside the root)", got, want)
	}
}

// TestFinishSkipsSwappedDirs: a directory recorded for the final pass and
// later replaced by a symlink — to a directory beside the root, the
// host's stand-in — is skipped, whatever the sink.
func TestFinishSkipsSwappedDirs(t *testing.T) {
	for _, sink := range sinks {
		t.Run(sink.name, func(t *testing.T) {
			if sink.opts.Sink == LayerDir && os.Geteuid() != 0 {
				testutil.SkipHost(t, "needs root: mknod, chown")
			}
			outside := filepath.Join(t.TempDir(), "outside")
			if err := os.MkdirAll(filepath.Join(outside, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			old := time.Unix(1500000000, 0)
			for _, p := range []string{filepath.Join(outside, "x"), outside} {
				os.Chtimes(p, old, old)
			}
			entries := []tarEntry{
				{name: "a/", typ: tar.TypeDir},
				{name: "a/x/", typ: tar.TypeDir, mode: 0o777},
			}
			if sink.opts.Sink == LayerDir {
				// A layer refuses parent symlinks, but its final pass
				// must not follow one either.
				entries = append(entries, tarEntry{name: ".wh.a", typ: tar.TypeReg})
			}
			entries = append(entries, tarEntry{name: "a", typ: tar.TypeSymlink, link: outside})
			_, err := applyAll(t, sink.opts, makeTar(t, entries))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{filepath.Join(outside, "x"), outside} {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatal(err)
				}
				if st.Mode&0o7777 != 0o755 || st.Mtim.Sec != old.Unix() {
					t.Errorf("%s: mode %o mtime %d, want 755 and %d untouched", p, st.Mode&0o7777, st.Mtim.Sec, old.Unix())
				}
			}
		})
	}
}

// BenchmarkApplyRootfs is BenchmarkUnpack's tree through the flattened
// sink, as an export or ADD applies it.
func BenchmarkApplyRootfs(b *testing.B) {
	requireRoot(b)
	dir := b.TempDir()
	build(b, dir, smallFiles(b, 10000))
	tarball := writeTar(b, dir)
	b.SetBytes(int64(len(tarball)))
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		dst, err := os.MkdirTemp(b.TempDir(), "")
		if err != nil {
			b.Fatal(err)
		}
		root, err := rooted.Open(dst)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		a := NewApplier(root, Options{Sink: Rootfs, ImplicitDir: &tar.Header{Mode: 0o755}})
		if err := a.Apply(context.Background(), bytes.NewReader(tarball)); err != nil {
			b.Fatal(err)
		}
		if err := a.Finish(root); err != nil {
			b.Fatal(err)
		}
		a.Close()
		b.StopTimer()
		root.Close()
		os.RemoveAll(dst)
		b.StartTimer()
	}
}
