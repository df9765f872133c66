package copier

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// recordByFrames is Record as it was first written, one Frame per field:
// the one-buffer Record must hash exactly the same bytes, or every cache
// key of a COPY from the context would change.
func recordByFrames(rel string, fi fs.FileInfo, content, link string) []byte {
	st, _ := fi.Sys().(*syscall.Stat_t)
	var uid, gid uint32
	if st != nil {
		uid, gid = st.Uid, st.Gid
	}
	rec := sha256.New()
	Frame(rec, "path", rel)
	Frame(rec, "type", fi.Mode().Type().String())
	Frame(rec, "mode", fmt.Sprintf("%o", toBits(fi.Mode())))
	Frame(rec, "owner", fmt.Sprintf("%d:%d", uid, gid))
	switch {
	case fi.Mode().IsRegular():
		Frame(rec, "content", content)
	case fi.Mode()&fs.ModeSymlink != 0:
		Frame(rec, "link", link)
	case st != nil && fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		Frame(rec, "rdev", fmt.Sprint(st.Rdev))
	}
	return rec.Sum(nil)
}

func TestRecordMatchesFrames(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, string(bytes.Repeat([]byte("n"), 200)))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(dir, "f"), 0o755|os.ModeSetuid))
	must(os.WriteFile(long, nil, 0o600))
	must(os.Symlink("f", filepath.Join(dir, "l")))
	must(os.Mkdir(filepath.Join(dir, "d"), 0o1777))
	must(os.Chmod(filepath.Join(dir, "d"), 0o777|os.ModeSticky))
	must(os.Chown(filepath.Join(dir, "f"), os.Getuid(), os.Getgid()))
	tests := []struct {
		name, path, rel, content, link string
	}{
		{"regular setuid", filepath.Join(dir, "f"), "/f", "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881", ""},
		{"long name", long, "/" + filepath.Base(long) + "/" + filepath.Base(long), "", ""},
		{"symlink", filepath.Join(dir, "l"), "/l", "", "f"},
		{"sticky dir", filepath.Join(dir, "d"), "/d", "", ""},
		{"char device", "/dev/null", "/dev/null", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fi, err := os.Lstat(tt.path)
			must(err)
			if got, want := Record(tt.rel, fi, tt.content, tt.link), recordByFrames(tt.rel, fi, tt.content, tt.link); !bytes.Equal(got, want) {
				t.Errorf("Record = %x, want %x", got, want)
			}
		})
	}
}
