package executor

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-build/kiln/executor/copier"
)

// TestCopyChildSeesNoHost: the COPY/ADD child runs in a root holding only
// the destination and the source, so even a path-string bug (here the ADD
// archive extraction's final directory-times pass, which walks paths
// that an archive has turned into a symlink to a host directory) cannot
// reach the host: the victim keeps its times and contents.
func TestCopyChildSeesNoHost(t *testing.T) {
	needRoot(t)
	victim := t.TempDir()
	must(t, os.Mkdir(filepath.Join(victim, "b"), 0o755))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(t, os.Chtimes(filepath.Join(victim, "b"), old, old))
	must(t, os.Chtimes(victim, old, old))
	modes := map[string]os.FileMode{}
	for _, p := range []string{victim, filepath.Join(victim, "b")} {
		fi, err := os.Stat(p)
		must(t, err)
		modes[p] = fi.Mode()
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, h := range []tar.Header{
		{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime},
		{Name: "a/b/", Typeflag: tar.TypeDir, Mode: 0o777, ModTime: mtime},
		{Name: "a", Typeflag: tar.TypeSymlink, Linkname: victim, ModTime: mtime},
		{Name: "a/b/x", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime},
	} {
		must(t, tw.WriteHeader(&h))
	}
	must(t, tw.Close())
	ctxDir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ctxDir, "evil.tar"), buf.Bytes(), 0o644))

	rootfs := newRootfs(t, busyboxRootfs(t))
	_ = Copy(context.Background(), CopySpec{Rootfs: rootfs, SourceDir: ctxDir, Op: copier.Op{Kind: "add", Sources: []string{"evil.tar"}, Dest: "/"}})
	for p, mode := range modes {
		fi, err := os.Stat(p)
		must(t, err)
		if !fi.ModTime().Equal(old) || fi.Mode() != mode {
			t.Errorf("%s changed: mode %v, mtime %v", p, fi.Mode(), fi.ModTime())
		}
	}
	if _, err := os.Lstat(filepath.Join(victim, "b", "x")); err == nil {
		t.Errorf("the archive wrote %s on the host", filepath.Join(victim, "b", "x"))
	}
}
