package cache

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestListContentsSameAsWalk: the fstatat walk writes byte for byte the
// list the path walk writes, over every kind of entry a layer holds.
func TestListContentsSameAsWalk(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a": "a", "b/c": "cc", "b/d/e": "eee", "B": "upper", "sp ace/q\"uote": "q", "ünï/f": "u", "z/.wh..wh..opq": "",
	})
	must(t, os.Symlink("../etc/passwd", filepath.Join(dir, "link")))
	must(t, os.Symlink("dangling", filepath.Join(dir, "b/dl")))
	must(t, os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b/hard")))
	must(t, syscall.Mknod(filepath.Join(dir, "b/wh"), syscall.S_IFCHR, 0))
	must(t, syscall.Mknod(filepath.Join(dir, "fifo"), syscall.S_IFIFO|0o640, 0))
	must(t, os.Chmod(filepath.Join(dir, "a"), 0o4755))
	must(t, os.Mkdir(filepath.Join(dir, "sticky"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "sticky"), os.ModeSticky|0o1777))
	must(t, os.Mkdir(filepath.Join(dir, "closed"), 0o755))
	writeFiles(t, dir, map[string]string{"closed/x": "x"})
	must(t, os.Chmod(filepath.Join(dir, "closed"), 0))
	must(t, os.Lchown(filepath.Join(dir, "b/c"), 1234, 5678))
	must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o700))
	dirs := []string{dir}
	if d := os.Getenv("KILN_LIST_CONTENTS_DIR"); d != "" {
		dirs = append(dirs, d) // an unpacked layer's fs/, by hand
	}
	for _, d := range dirs {
		want, err := listContentsWalk(d)
		must(t, err)
		got, err := listContents(d)
		must(t, err)
		if string(got) != string(want) {
			t.Errorf("%s: the fstatat walk lists\n%s\nthe path walk\n%s", d, got, want)
		}
	}
}

func BenchmarkListContents(b *testing.B) {
	d := os.Getenv("KILN_LIST_CONTENTS_DIR")
	if d == "" {
		b.Skip("KILN_LIST_CONTENTS_DIR names no unpacked layer")
	}
	for _, f := range []struct {
		name string
		list func(string) ([]byte, error)
	}{{"fstatat", listContents}, {"paths", listContentsWalk}} {
		b.Run(f.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := f.list(d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
