package rooted

import (
	"errors"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tree makes a root with a host canary beside it: every test asserts the
// canary is untouched however hostile the tree is.
func tree(t *testing.T) (root *Root, dir, canary string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "root")
	canary = filepath.Join(base, "canary")
	for _, d := range []string{dir, canary, filepath.Join(dir, "real", "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(canary, "file"), []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"abs":      canary,           // absolute target: re-rooted
		"rel":      "../../canary",   // climbs: clamped at the root
		"loop":     "loop",           // a loop
		"toreal":   "/real",          // a legitimate link
		"real/up":  "../toreal/sub",  // relative through another link
		"dotdot":   "real/../../..",  // resolves to the root
		"absfile":  canary + "/file", // a link to a host file
		"real/pwd": "/etc/passwd",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		b, err := os.ReadFile(filepath.Join(canary, "file"))
		if err != nil || string(b) != "canary" {
			t.Errorf("host canary changed: %q %v", b, err)
		}
		fi, err := os.Stat(filepath.Join(canary, "file"))
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("host canary mode changed: %v %v", fi.Mode(), err)
		}
		names, _ := os.ReadDir(canary)
		if len(names) != 1 {
			t.Errorf("host canary directory has %d entries, want 1", len(names))
		}
	})
	return r, dir, canary
}

func TestResolve(t *testing.T) {
	r, _, canary := tree(t)
	cases := []struct {
		in         string
		followLast bool
		want       string
		exists     bool
		err        error
	}{
		{"/", true, "/", true, nil},
		{"../../..", true, "/", true, nil},
		{"abs", false, "/abs", true, nil},
		{"abs/file", true, canary + "/file", false, nil},
		{"rel/x", true, "/canary/x", false, nil},
		{"toreal/sub", true, "/real/sub", true, nil},
		{"real/up", true, "/real/sub", true, nil},
		{"dotdot/real", true, "/real", true, nil},
		{"toreal/..", true, "/", true, nil}, // lexical first, as BuildKit
		{"missing/a/b", true, "/missing/a/b", false, nil},
		{"loop/x", true, "", false, ErrTooManyLinks},
		{"absfile", true, canary + "/file", false, nil},
	}
	for _, c := range cases {
		got, exists, err := r.Resolve(c.in, c.followLast)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Resolve(%q) error %v, want %v", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want || exists != c.exists {
			t.Errorf("Resolve(%q, %v) = %q, %v, %v; want %q, %v", c.in, c.followLast, got, exists, err, c.want, c.exists)
		}
	}
}

func TestOpenRefusesSymlinks(t *testing.T) {
	r, _, _ := tree(t)
	for _, p := range []string{"/abs", "/abs/x", "/toreal/sub", "/rel"} {
		if d, err := r.OpenDir(p); err == nil {
			d.Close()
			t.Errorf("OpenDir(%q) followed a symlink", p)
		}
	}
	d, err := r.OpenDir("/real/sub")
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}

func TestMetadataNeverFollows(t *testing.T) {
	if os.Getuid() != 0 {
		testutil.SkipHost(t, "chown needs root")
	}
	r, dir, canary := tree(t)
	d := r.Dir()
	for _, name := range []string{"abs", "absfile"} {
		if err := d.Chmod(name, 0o777); err != nil {
			t.Errorf("Chmod(%s): %v", name, err)
		}
		if err := d.Lchown(name, 1234, 1234); err != nil {
			t.Errorf("Lchown(%s): %v", name, err)
		}
		if err := d.Lutimes(name, time.Unix(1, 0), time.Unix(1, 0)); err != nil {
			t.Errorf("Lutimes(%s): %v", name, err)
		}
		// Linux refuses user.* xattrs on symlinks: an error, never the target.
		_ = d.Lsetxattr(name, "user.kiln", []byte("x"))
	}
	var st unix.Stat_t
	if err := unix.Stat(canary, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 || st.Mode&0o777 != 0o755 {
		t.Errorf("canary dir changed: uid %d mode %o", st.Uid, st.Mode&0o777)
	}
	if _, err := unix.Lgetxattr(filepath.Join(canary, "file"), "user.kiln", make([]byte, 8)); err == nil {
		t.Error("xattr set through a symlink")
	}
	var lst unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "abs"), &lst); err != nil || lst.Uid != 1234 {
		t.Errorf("symlink itself not chowned: %v uid %d", err, lst.Uid)
	}
}

func TestNamesMustBeOneComponent(t *testing.T) {
	r, _, _ := tree(t)
	d := r.Dir()
	for _, name := range []string{"", ".", "..", "a/b", "../canary"} {
		if err := d.Mkdir(name, 0o755); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Mkdir(%q) = %v, want EINVAL", name, err)
		}
	}
}

func TestRemoveAllStaysInside(t *testing.T) {
	r, dir, _ := tree(t)
	if err := os.Symlink("/", filepath.Join(dir, "real", "sub", "slash")); err != nil {
		t.Fatal(err)
	}
	if err := r.Dir().RemoveAll("real"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "real")); !os.IsNotExist(err) {
		t.Errorf("real still there: %v", err)
	}
	if err := r.Dir().RemoveAll("abs"); err != nil {
		t.Fatal(err)
	}
}

func TestReadFileRefusesSpecialFiles(t *testing.T) {
	r, dir, _ := tree(t)
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "etc", "passwd"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "group"), []byte("root:x:0:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.ReadFile("/etc/passwd", 1<<20); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("read a FIFO as /etc/passwd")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a FIFO /etc/passwd blocked")
	}
	// /real/pwd is a symlink to /etc/passwd: resolved inside the root.
	if _, err := r.ReadFile("/real/pwd", 1<<20); err == nil {
		t.Error("read a FIFO through a symlink")
	}
	b, err := r.ReadFile("/etc/group", 1<<20)
	if err != nil || string(b) != "root:x:0:\n" {
		t.Errorf("ReadFile(/etc/group) = %q, %v", b, err)
	}
	if _, err := r.ReadFile("/etc/group", 3); err == nil {
		t.Error("limit not enforced")
	}
}

func TestMkdirAll(t *testing.T) {
	r, dir, _ := tree(t)
	var made []string
	d, err := r.MkdirAll("/a/b/c", 0o750, func(p *Dir, name string) error {
		made = append(made, p.Name()+"|"+name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if len(made) != 3 || made[0] != "/|a" || made[2] != "/a/b|c" {
		t.Errorf("made = %q", made)
	}
	fi, err := os.Stat(filepath.Join(dir, "a/b/c"))
	if err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	if _, err := r.MkdirAll("/abs/x", 0o755, nil); err == nil {
		t.Error("MkdirAll went through a symlink")
	}
}
