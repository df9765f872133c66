package contexthash

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestChecksum(t *testing.T) {
	tests := []struct {
		name    string
		change  func(t *testing.T, dir string)
		changed bool
	}{
		{"nothing", func(t *testing.T, dir string) {}, false},
		{"mtime only", func(t *testing.T, dir string) {
			future := time.Now().Add(time.Hour)
			must(t, os.Chtimes(filepath.Join(dir, "src/a.txt"), future, future))
		}, false},
		{"content", func(t *testing.T, dir string) { write(t, dir, "src/a.txt", "A\n") }, true},
		{"same size content", func(t *testing.T, dir string) { write(t, dir, "src/a.txt", "b\n") }, true},
		{"mode", func(t *testing.T, dir string) { must(t, os.Chmod(filepath.Join(dir, "src/a.txt"), 0o600)) }, true},
		{"new file", func(t *testing.T, dir string) { write(t, dir, "src/new.txt", "n\n") }, true},
		{"excluded file", func(t *testing.T, dir string) { write(t, dir, "src/x.log", "log\n") }, false},
		{"file outside the sources", func(t *testing.T, dir string) { write(t, dir, "other.txt", "o\n") }, false},
		{"symlink target", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "src/link")))
			must(t, os.Symlink("b.txt", filepath.Join(dir, "src/link")))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, memo := t.TempDir(), t.TempDir()
			write(t, dir, "src/a.txt", "a\n")
			write(t, dir, "src/b.txt", "b\n")
			write(t, dir, "src/keep.log", "kept by an exception\n")
			must(t, os.Symlink("a.txt", filepath.Join(dir, "src/link")))
			excludes := []string{"src/*.log", "!src/keep.log"}
			sum := func() string {
				h, err := Open(memo, dir)
				must(t, err)
				s, _, err := h.Checksum([]string{"/src"}, excludes)
				must(t, err)
				must(t, h.Save())
				return s
			}
			before := sum()
			tt.change(t, dir)
			if after := sum(); (after != before) != tt.changed {
				t.Errorf("checksum changed: %v, want %v", after != before, tt.changed)
			}
		})
	}
}

// The memo survives a save and a load unchanged, and a stale entry (the
// file's stat moved) is not trusted.
func TestMemo(t *testing.T) {
	m := map[string]memoEntry{
		"/a":         {Size: 1, Mtime: 2, Ctime: 3, Ino: 4, Sum: "abc"},
		"/dir/b c.x": {Size: 10, Mtime: 20, Ctime: 30, Ino: 40, Sum: "def"},
	}
	if got := decodeMemo(encodeMemo(m)); !reflect.DeepEqual(got, m) {
		t.Errorf("round trip: %v, want %v", got, m)
	}
	if got := decodeMemo([]byte("garbage")); len(got) != 0 {
		t.Errorf("garbage decoded to %v", got)
	}
	dir, memo := t.TempDir(), t.TempDir()
	write(t, dir, "f", "one\n")
	h, err := Open(memo, dir)
	must(t, err)
	s1, _, err := h.Checksum([]string{"/f"}, nil)
	must(t, err)
	must(t, h.Save())
	// same size, new content, mtime forced back: ctime still moves
	fi, err := os.Stat(filepath.Join(dir, "f"))
	must(t, err)
	write(t, dir, "f", "two\n")
	must(t, os.Chtimes(filepath.Join(dir, "f"), fi.ModTime(), fi.ModTime()))
	h2, err := Open(memo, dir)
	must(t, err)
	s2, _, err := h2.Checksum([]string{"/f"}, nil)
	must(t, err)
	if s1 == s2 {
		t.Error("a rewritten file with its old mtime kept its old digest")
	}
}

func write(t *testing.T, dir, rel, s string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(s), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
