package export

import (
	"archive/tar"
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/testutil"
)

// layeredImage exercises what flattening has to get right: a whiteout, an
// opaque directory (with an entry of the same layer before the marker), a
// write through an absolute symlink, hardlinks that survive and one whose
// target a later layer replaces, setuid and sticky modes, owners, an
// xattr, a device node and a read-only directory written into later.
func layeredImage(t testing.TB) v1.Image {
	tool := ent{name: "bin/tool", typ: tar.TypeReg, mode: 0o4755, uid: 1000, gid: 1000, body: "#!tool\n", xattrs: map[string]string{"user.kiln": "yes"}}
	l1 := gzLayer(t,
		dir("./", 0o755),
		dir("etc/", 0o755), file("etc/passwd", "root:x:0:0\n"), file("etc/hosts", "127.0.0.1 localhost\n"),
		dir("opt/", 0o755), file("opt/a", "a"), dir("opt/sub/", 0o755), file("opt/sub/b", "b"),
		dir("run/", 0o755), dir("var/", 0o755), symlink("var/run", "/run"),
		dir("bin/", 0o755), tool, hardlink("bin/tool2", "bin/tool"), symlink("bin/sh", "tool"),
		dir("lib/", 0o755), file("lib/x", "old"), hardlink("lib/y", "lib/x"),
		dir("ro/", 0o555),
		dir("dev/", 0o755), ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1},
	)
	l2 := gzLayer(t,
		file("etc/.wh.hosts", ""),
		file("opt/new", "new"), dir("opt/sub/", 0o700), file("opt/.wh..wh..opq", ""),
		file("var/run/pidfile", "42"),
		file("ro/new", "written into a read-only directory"),
		dir("tmp/", 0o1777),
		file("lib/x", "v2"),
		hardlink("bin/tool3", "/bin/tool"),
	)
	return imageOf(t, l1, l2)
}

// writableOnCleanup makes the image's read-only directory writable again
// before t.TempDir's cleanup (cleanups run last-registered first), which
// otherwise cannot delete its contents without root.
func writableOnCleanup(t *testing.T, root string) {
	t.Cleanup(func() { os.Chmod(filepath.Join(root, "ro"), 0o755) })
}

func TestLocal(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "rootfs")
	writableOnCleanup(t, dest)
	if err := Local(context.Background(), layeredImage(t), dest); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, filepath.Dir(dest)); !slices.Equal(got, []string{"rootfs"}) {
		t.Errorf("parent holds %v, want only rootfs", got)
	}
	p := func(rel string) string { return filepath.Join(dest, rel) }
	read := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(p(rel))
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}
	stat := func(rel string) *syscall.Stat_t {
		t.Helper()
		fi, err := os.Lstat(p(rel))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t)
	}

	// Whiteouts.
	if _, err := os.Lstat(p("etc/hosts")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("etc/hosts survived its whiteout: %v", err)
	}
	if got := read("etc/passwd"); got != "root:x:0:0\n" {
		t.Errorf("etc/passwd = %q", got)
	}
	if got := dirNames(t, p("opt")); !slices.Equal(got, []string{"new", "sub"}) {
		t.Errorf("opaque opt holds %v, want [new sub]", got)
	}
	if got := dirNames(t, p("opt/sub")); len(got) != 0 {
		t.Errorf("opt/sub holds %v from below the opaque marker", got)
	}
	filepath.WalkDir(dest, func(path string, d fs.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), ".wh.") {
			t.Errorf("whiteout file %s in output", path)
		}
		return nil
	})

	// Symlinks: kept as links, and followed inside the root when written through.
	if l, _ := os.Readlink(p("var/run")); l != "/run" {
		t.Errorf("var/run -> %q, want /run", l)
	}
	if got := read("run/pidfile"); got != "42" {
		t.Errorf("run/pidfile = %q", got)
	}
	if l, _ := os.Readlink(p("bin/sh")); l != "tool" {
		t.Errorf("bin/sh -> %q", l)
	}

	// Hardlinks.
	if a, b, c := stat("bin/tool").Ino, stat("bin/tool2").Ino, stat("bin/tool3").Ino; a != b || a != c {
		t.Errorf("bin/tool, tool2, tool3 inodes %d %d %d, want one", a, b, c)
	}
	if stat("lib/x").Ino == stat("lib/y").Ino || read("lib/x") != "v2" || read("lib/y") != "old" {
		t.Errorf("lib/x replaced by a later layer must leave lib/y its old content: x=%q y=%q", read("lib/x"), read("lib/y"))
	}

	// Modes, times, owners, xattrs.
	for rel, want := range map[string]fs.FileMode{
		"bin/tool": fs.ModeSetuid | 0o755,
		"tmp":      fs.ModeDir | fs.ModeSticky | 0o777,
		"ro":       fs.ModeDir | 0o555,
		"opt/sub":  fs.ModeDir | 0o700,
		"etc":      fs.ModeDir | 0o755,
	} {
		if fi, err := os.Lstat(p(rel)); err != nil || fi.Mode() != want {
			t.Errorf("%s mode %v, want %v (%v)", rel, fi.Mode(), want, err)
		}
	}
	if got := read("ro/new"); got == "" {
		t.Error("ro/new not written")
	}
	for _, rel := range []string{"etc/passwd", "etc", "bin/tool"} {
		if fi, err := os.Lstat(p(rel)); err != nil || !fi.ModTime().Equal(time.Unix(1700000000, 0)) {
			t.Errorf("%s mtime %v, want the layer's", rel, fi.ModTime())
		}
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(p("bin/tool"), "user.kiln", buf); err != nil || string(buf[:n]) != "yes" {
		t.Errorf("xattr user.kiln on bin/tool: %q %v", buf[:n], err)
	}
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "needs root: owners and device nodes not checked")
	}
	if st := stat("bin/tool"); st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("bin/tool owned by %d:%d, want 1000:1000", st.Uid, st.Gid)
	}
	if st := stat("dev/null"); st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 {
		t.Errorf("dev/null mode %o rdev %d, want a char device 1:0", st.Mode, st.Rdev)
	}
}

// TestLocalEscapes: no entry may create anything outside the output
// directory. Names that climb out are contained as BuildKit contains them
// ("../x" is "/x"); symlinks are followed as if the output were "/", so
// what goes through them lands inside.
func TestLocalEscapes(t *testing.T) {
	tests := []struct {
		name    string
		entries []ent
		wantErr string
		inside  string // a file that must exist inside the output instead
	}{
		{name: "dotdot", entries: []ent{file("../evil", "x")}, inside: "evil"},
		{name: "dotdot inside", entries: []ent{dir("a/", 0o755), file("a/../../evil", "x")}, inside: "evil"},
		{name: "absolute dotdot", entries: []ent{file("/../evil", "x")}, inside: "evil"},
		{name: "hardlink out", entries: []ent{hardlink("x", "../evil")}, wantErr: "hardlink target ../evil does not exist"},
		{name: "malformed whiteout", entries: []ent{file("a/.wh..", "")}, wantErr: "malformed whiteout"},
		{name: "symlink loop", entries: []ent{symlink("loop", "loop"), file("loop/evil", "x")}, wantErr: "too many levels"},
		{name: "relative symlink up", entries: []ent{symlink("up", "../../.."), file("up/evil", "x")}, inside: "evil"},
		{name: "absolute symlink", entries: []ent{symlink("abs", "/"), file("abs/etc/evil", "x")}, inside: "etc/evil"},
		{name: "symlink chain", entries: []ent{dir("d/", 0o755), symlink("d/l", "../../d/.."), symlink("m", "d/l/d/l"), file("m/evil", "x")}, inside: "evil"},
		{name: "whiteout through symlink", entries: []ent{symlink("up", "../.."), file("up/.wh.evil", "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			// Bait for the whiteout case: must survive.
			if err := os.WriteFile(filepath.Join(base, "evil"), []byte("bait"), 0o644); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(base, "out")
			err := Local(context.Background(), imageOf(t, gzLayer(t, tt.entries...)), dest)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if got := dirNames(t, base); !slices.Equal(got, []string{"evil"}) {
					t.Errorf("after a refused export the parent holds %v", got)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(base, "evil")); string(b) != "bait" {
				t.Errorf("file outside the output changed to %q", b)
			}
			if tt.inside != "" {
				if b, err := os.ReadFile(filepath.Join(dest, tt.inside)); err != nil || string(b) != "x" {
					t.Errorf("%s inside the output: %q %v", tt.inside, b, err)
				}
			}
		})
	}
}

// TestLocalExisting: an existing output directory keeps unrelated files and
// gets the image's files over its own, like BuildKit's local exporter.
func TestLocalExisting(t *testing.T) {
	dest := t.TempDir()
	writableOnCleanup(t, dest)
	for rel, body := range map[string]string{"keep.txt": "mine", "etc/passwd": "old", "bin": "a file where the image has a directory"} {
		os.MkdirAll(filepath.Join(dest, filepath.Dir(rel)), 0o755)
		if err := os.WriteFile(filepath.Join(dest, rel), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Local(context.Background(), layeredImage(t), dest); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{"keep.txt": "mine", "etc/passwd": "root:x:0:0\n", "bin/tool": "#!tool\n", "run/pidfile": "42"} {
		if b, err := os.ReadFile(filepath.Join(dest, rel)); err != nil || string(b) != want {
			t.Errorf("%s = %q %v, want %q", rel, b, err, want)
		}
	}
	if got := dirNames(t, filepath.Dir(dest)); len(got) != 1 {
		t.Errorf("temporary directory left beside the output: %v", got)
	}
}

func TestRootfsTar(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "rootfs.tar")
	outs, err := ParseOutputs([]string{"type=tar,dest=" + dest})
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(context.Background(), layeredImage(t), outs[0], nil); err != nil {
		t.Fatal(err)
	}
	hs, bodies := tarHeaders(t, dest)
	var names []string
	byName := map[string]*tar.Header{}
	for _, h := range hs {
		names = append(names, h.Name)
		byName[h.Name] = h
		if parent := path.Dir(strings.TrimSuffix(h.Name, "/")); parent != "." && byName[parent+"/"] == nil {
			t.Errorf("%s comes before its directory", h.Name)
		}
	}
	want := []string{
		"bin/", "bin/sh", "bin/tool", "bin/tool2", "bin/tool3",
		"dev/", "dev/null",
		"etc/", "etc/passwd",
		"lib/", "lib/x", "lib/y",
		"opt/", "opt/new", "opt/sub/",
		"ro/", "ro/new",
		"run/", "run/pidfile",
		"tmp/",
		"var/", "var/run",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("entries\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	check := func(name string, typ byte, mode int64, uid int, link string) {
		t.Helper()
		h := byName[name]
		if h.Typeflag != typ || h.Mode != mode || h.Uid != uid || h.Linkname != link {
			t.Errorf("%s: type %q mode %o uid %d link %q; want %q %o %d %q", name, h.Typeflag, h.Mode, h.Uid, h.Linkname, typ, mode, uid, link)
		}
	}
	check("bin/tool", tar.TypeReg, 0o4755, 1000, "")
	check("bin/tool2", tar.TypeLink, 0o644, 0, "bin/tool")
	check("bin/tool3", tar.TypeLink, 0o644, 0, "bin/tool")
	check("lib/y", tar.TypeReg, 0o644, 0, "")
	check("tmp/", tar.TypeDir, 0o1777, 0, "")
	check("ro/", tar.TypeDir, 0o555, 0, "")
	check("var/run", tar.TypeSymlink, 0o777, 0, "/run")
	check("dev/null", tar.TypeChar, 0o666, 0, "")
	if h := byName["bin/tool"]; h.PAXRecords[xattrPrefix+"user.kiln"] != "yes" {
		t.Errorf("bin/tool xattrs %v", h.PAXRecords)
	}
	if bodies["lib/x"] != "v2" || bodies["lib/y"] != "old" || bodies["run/pidfile"] != "42" {
		t.Errorf("contents: %q", bodies)
	}
	if !byName["etc/passwd"].ModTime.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("etc/passwd mtime %v", byName["etc/passwd"].ModTime)
	}
	if got := dirNames(t, filepath.Dir(dest)); !slices.Equal(got, []string{"rootfs.tar"}) {
		t.Errorf("directory holds %v, want only rootfs.tar", got)
	}
}
