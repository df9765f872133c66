package rooted

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestHide: an entry Hide refuses is absent for Lstat, Resolve and
// ReadFile, including as a component on the way (a symlink a filter
// excludes is never followed).
func TestHide(t *testing.T) {
	r, dir, _ := tree(t)
	if err := os.WriteFile(filepath.Join(dir, "real", "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Hide = func(p string, st *syscall.Stat_t) error {
		if p == "/toreal" || p == "/real/file" {
			return &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
		}
		return nil
	}
	defer func() { r.Hide = nil }()
	if _, err := r.Lstat("/toreal"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lstat of a hidden entry: %v", err)
	}
	if res, exists, err := r.Resolve("/toreal/sub", true); err != nil || exists || res != "/toreal/sub" {
		t.Errorf("Resolve through a hidden link = %q %v %v, want the literal path, absent", res, exists, err)
	}
	if _, err := r.ReadFile("/real/file", 10); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a hidden file: %v", err)
	}
	if res, exists, err := r.Resolve("/real/sub", true); err != nil || !exists || res != "/real/sub" {
		t.Errorf("Resolve of a visible path = %q %v %v", res, exists, err)
	}
}

func TestFileInfoAndDup(t *testing.T) {
	r, _, _ := tree(t)
	st, err := r.Lstat("/abs")
	if err != nil {
		t.Fatal(err)
	}
	if fi := FileInfo("/abs", st); fi.Name() != "abs" || fi.Mode()&fs.ModeSymlink == 0 || fi.IsDir() {
		t.Errorf("FileInfo of a symlink: %v %v", fi.Name(), fi.Mode())
	}
	d, err := r.OpenDir("/real")
	if err != nil {
		t.Fatal(err)
	}
	dd, err := d.Dup()
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer dd.Close()
	if _, err := dd.Lstat("sub"); err != nil || dd.Name() != "/real" {
		t.Errorf("the duplicate handle: %v %q", err, dd.Name())
	}
}
