package userdb

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/kiln-build/kiln/rooted"
)

func TestParse(t *testing.T) {
	tests := []struct {
		data         string
		n            int
		skipComments bool
		want         [][]string
	}{
		{"root:x:0:0:root:/root:/bin/sh\n", 7, true, [][]string{{"root", "x", "0", "0", "root", "/root", "/bin/sh"}}},
		{"  app:x:1\n\n#c:x:2\n", 4, true, [][]string{{"app", "x", "1", ""}}},
		{"#c:x:2", 4, false, [][]string{{"#c", "x", "2", ""}}},
		{"g:x:5:a,b:extra", 4, true, [][]string{{"g", "x", "5", "a,b:extra"}}},
		{"", 7, true, nil},
	}
	for _, tt := range tests {
		if got := Parse([]byte(tt.data), tt.n, tt.skipComments); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %q, want %q", tt.data, got, tt.want)
		}
	}
}

// TestReadFile: a missing file is no data, a FIFO or an oversized file is
// an error that says what to do, and a symlink stays inside the root.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "real"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "real/passwd"), []byte("app:x:1:1::/:/bin/sh\n"), 0o644))
	must(os.Symlink("/real/passwd", filepath.Join(dir, "etc/passwd")))
	must(syscall.Mkfifo(filepath.Join(dir, "etc/group"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc/shadow"), make([]byte, MaxFileBytes+1), 0o644))
	r, err := rooted.Open(dir)
	must(err)
	defer r.Close()

	if b, err := ReadFile(r, "/etc/passwd"); err != nil || string(b) != "app:x:1:1::/:/bin/sh\n" {
		t.Errorf("through a symlink: %q %v", b, err)
	}
	if b, err := ReadFile(r, "/etc/missing"); err != nil || b != nil {
		t.Errorf("missing: %q %v", b, err)
	}
	for _, name := range []string{"/etc/group", "/etc/shadow"} {
		if _, err := ReadFile(r, name); err == nil || !strings.Contains(err.Error(), "fix the image") {
			t.Errorf("%s: %v, want an error saying what to do", name, err)
		}
	}
}
