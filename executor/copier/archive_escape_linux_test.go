package copier

import (
	"archive/tar"
	"bytes"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestAddArchiveDirSwapLeavesHostAlone is issue 9's second finding: an
// archive makes a/x, then replaces a with a symlink to a host directory;
// the pass that sets directory times last must not follow it.
func TestAddArchiveDirSwapLeavesHostAlone(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	c := testutil.NewCanary(t)
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
		{Name: "a", Typeflag: tar.TypeSymlink, Linkname: c.Dir, Mode: 0o777},
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
	c.Check(t)
	if l, err := os.Readlink(filepath.Join(dstRoot, "app", "a")); err != nil || l != c.Dir {
		t.Errorf("app/a -> %q %v, want the archive's symlink", l, err)
	}
}
