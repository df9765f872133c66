package copier

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostCanary is a host directory (with a subdirectory and a file) that
// extraction must leave exactly as it was: content, mode, owner, mtime and
// xattrs.
type hostCanary struct {
	dir   string
	state map[string]string
}

func newHostCanary(t *testing.T, dir string) *hostCanary {
	t.Helper()
	for _, d := range []string{dir, filepath.Join(dir, "x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := filepath.Join(dir, "x", "file")
	if err := os.WriteFile(f, []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1500000000, 0)
	for _, p := range []string{f, filepath.Join(dir, "x"), dir} {
		unix.Lsetxattr(p, "user.canary", []byte("1"), 0)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	c := &hostCanary{dir: dir}
	c.state = c.snapshot()
	return c
}

func (c *hostCanary) snapshot() map[string]string {
	out := map[string]string{}
	filepath.Walk(c.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			out[p] = err.Error()
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		buf := make([]byte, 64)
		n, _ := unix.Lgetxattr(p, "user.canary", buf)
		var body []byte
		if fi.Mode().IsRegular() {
			body, _ = os.ReadFile(p)
		}
		out[p] = fi.Mode().String() + " " + time.Unix(st.Mtim.Sec, st.Mtim.Nsec).UTC().String() +
			" " + string(rune('0'+st.Uid%10)) + string(rune('0'+st.Gid%10)) + " x=" + string(buf[:max(n, 0)]) + " " + string(body)
		if st.Uid != 0 || st.Gid != 0 {
			out[p] += " not-root-owned"
		}
		return nil
	})
	return out
}

func (c *hostCanary) check(t *testing.T) {
	t.Helper()
	now := c.snapshot()
	for p, want := range c.state {
		if got := now[p]; got != want {
			t.Errorf("host canary %s changed:\n got %s\nwant %s", p, got, want)
		}
	}
	for p := range now {
		if _, ok := c.state[p]; !ok {
			t.Errorf("host canary gained %s", p)
		}
	}
}

// TestAddArchiveDirSwapLeavesHostAlone is issue 9's second finding: an
// archive makes a/x, then replaces a with a symlink to a host directory;
// the pass that sets directory times last must not follow it.
func TestAddArchiveDirSwapLeavesHostAlone(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	c := newHostCanary(t, filepath.Join(tmp, "victim"))
	srcRoot, dstRoot := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
	for _, d := range []string{srcRoot, dstRoot} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []tar.Header{
		{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "a/x/", Typeflag: tar.TypeDir, Mode: 0o777, Uid: 1234, Gid: 1234,
			PAXRecords: map[string]string{"SCHILY.xattr.user.evil": "1"}},
		{Name: "a", Typeflag: tar.TypeSymlink, Linkname: c.dir, Mode: 0o777},
	} {
		h.ModTime = time.Unix(1700000000, 0)
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	if err := os.WriteFile(filepath.Join(srcRoot, "a.tar"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Do(srcRoot, dstRoot, Op{Kind: "add", Sources: []string{"a.tar"}, Dest: "/app/"})
	if err != nil {
		t.Fatal(err)
	}
	c.check(t)
	if l, err := os.Readlink(filepath.Join(dstRoot, "app", "a")); err != nil || l != c.dir {
		t.Errorf("app/a -> %q %v, want the archive's symlink", l, err)
	}
}
