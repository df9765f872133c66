package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "needs root: builds trees with mknod, chown and trusted.* xattrs")
	}
}

// fixedTime is every fixture's mtime, so that golden digests are stable.
var fixedTime = time.Unix(1700000000, 0)

// node is one path of a test tree, created in table order.
type node struct {
	path   string
	kind   string // dir, file, symlink, hardlink, fifo, char, block, whiteout, socket
	mode   uint32
	uid    int
	gid    int
	data   string
	target string // symlink target, or the existing path a hardlink points at
	major  uint32
	minor  uint32
	xattrs map[string]string
}

// capNetBindService is a valid VFS_CAP_REVISION_2 security.capability value
// granting cap_net_bind_service (the kernel rejects malformed ones).
func capNetBindService() string {
	var b [20]byte
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1) // revision 2, effective
	binary.LittleEndian.PutUint32(b[4:], 1<<10)          // permitted: CAP_NET_BIND_SERVICE
	return string(b[:])
}

func build(t testing.TB, root string, nodes []node) {
	t.Helper()
	for _, n := range nodes {
		p := filepath.Join(root, n.path)
		mode := n.mode
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch n.kind {
		case "dir":
			if mode == 0 {
				mode = 0o755
			}
			err = os.MkdirAll(p, 0o755)
		case "file":
			if mode == 0 {
				mode = 0o644
			}
			err = os.WriteFile(p, []byte(n.data), 0o600)
		case "symlink":
			err = os.Symlink(n.target, p)
		case "hardlink":
			err = os.Link(filepath.Join(root, n.target), p)
		case "fifo":
			err = unix.Mkfifo(p, 0o600)
		case "char":
			err = unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(n.major, n.minor)))
		case "block":
			err = unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(n.major, n.minor)))
		case "whiteout":
			err = unix.Mknod(p, unix.S_IFCHR, 0)
		case "socket":
			var fd int
			fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err == nil {
				err = unix.Bind(fd, &unix.SockaddrUnix{Name: p})
				unix.Close(fd)
			}
		default:
			t.Fatalf("unknown node kind %q", n.kind)
		}
		if err != nil {
			t.Fatalf("creating %s %s: %v", n.kind, n.path, err)
		}
		if n.kind == "hardlink" {
			continue
		}
		if err := os.Lchown(p, n.uid, n.gid); err != nil {
			t.Fatal(err)
		}
		if n.kind != "symlink" && n.kind != "whiteout" {
			if err := unix.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		for k, v := range n.xattrs {
			if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil {
				t.Fatalf("setting %s on %s: %v", k, n.path, err)
			}
		}
	}
	stampTimes(t, root)
}

// stampTimes sets every mtime under root to fixedTime, deepest first so
// that setting a child's time does not disturb its parent afterwards.
func stampTimes(t testing.TB, root string) {
	t.Helper()
	var paths []string
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(paths)
	for _, p := range paths[:len(paths)-1] { // not root itself
		if err := setTimes(p, fixedTime, fixedTime); err != nil {
			t.Fatal(err)
		}
	}
}

func writeTar(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), dir, &buf); err != nil {
		t.Fatalf("WriteTar(%s): %v", dir, err)
	}
	return buf.Bytes()
}

// listTar renders a tar as one line per entry: name, type, mode, uid, gid,
// size, link target or device numbers, xattr names.
func listTar(t testing.TB, b []byte) string {
	t.Helper()
	var out strings.Builder
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		if hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: uname/gname %q/%q, want numeric ids only", hdr.Name, hdr.Uname, hdr.Gname)
		}
		fmt.Fprintf(&out, "%s %s %04o %d %d %d", hdr.Name, typeName(hdr.Typeflag), hdr.Mode, hdr.Uid, hdr.Gid, hdr.Size)
		switch hdr.Typeflag {
		case tar.TypeLink, tar.TypeSymlink:
			fmt.Fprintf(&out, " -> %s", hdr.Linkname)
		case tar.TypeChar, tar.TypeBlock:
			fmt.Fprintf(&out, " %d:%d", hdr.Devmajor, hdr.Devminor)
		}
		var xs []string
		for k, v := range hdr.PAXRecords {
			if name, ok := strings.CutPrefix(k, paxXattr); ok {
				xs = append(xs, fmt.Sprintf("%s=%x", name, v))
			}
		}
		slices.Sort(xs)
		for _, x := range xs {
			fmt.Fprintf(&out, " xattr:%s", x)
		}
		out.WriteString("\n")
	}
	fmt.Fprintf(&out, "# sha256:%x\n", sha256.Sum256(b))
	return out.String()
}

func typeName(f byte) string {
	switch f {
	case tar.TypeReg:
		return "file"
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "char"
	case tar.TypeBlock:
		return "block"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("type%q", f)
}

// listDir renders an overlay-format directory the way listTar renders a
// tar, with whiteouts and opaque xattrs visible as they are on disk.
func listDir(t testing.TB, root string) string {
	t.Helper()
	var out strings.Builder
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		kind := map[uint32]string{unix.S_IFREG: "file", unix.S_IFDIR: "dir", unix.S_IFLNK: "symlink",
			unix.S_IFCHR: "char", unix.S_IFBLK: "block", unix.S_IFIFO: "fifo"}[st.Mode&unix.S_IFMT]
		size := st.Size
		if kind != "file" {
			size = 0
		}
		fmt.Fprintf(&out, "%s %s %04o %d %d %d nlink=%d", rel, kind, st.Mode&0o7777, st.Uid, st.Gid, size, st.Nlink)
		switch kind {
		case "symlink":
			target, _ := os.Readlink(p)
			fmt.Fprintf(&out, " -> %s", target)
		case "char", "block":
			fmt.Fprintf(&out, " %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case "file":
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, " %q", data)
		}
		sz, _ := unix.Llistxattr(p, nil)
		if sz > 0 {
			buf := make([]byte, sz)
			n, _ := unix.Llistxattr(p, buf)
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			slices.Sort(names)
			for _, name := range names {
				v, err := getXattr(p, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(&out, " xattr:%s=%x", name, v)
			}
		}
		if st.Mtim.Sec != fixedTime.Unix() && kind != "dir" {
			fmt.Fprintf(&out, " mtime=%d", st.Mtim.Sec)
		}
		out.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (run with -update to accept):\n--- got\n%s--- want\n%s", name, p, got, want)
	}
}

var treeCases = []struct {
	name  string
	nodes []node
}{
	{
		name: "basic",
		nodes: []node{
			{path: "a", kind: "dir"},
			{path: "a/b", kind: "dir", mode: 0o2775, gid: 50},
			{path: "a/b/file", kind: "file", data: "hello\n", uid: 1000, gid: 1000, mode: 0o640},
			{path: "a-b", kind: "file", data: "sorts after a/ in the walk"},
			{path: "a.b", kind: "file"},
			{path: "B", kind: "file", data: "upper case sorts first"},
			{path: "tmp", kind: "dir", mode: 0o1777},
			{path: "usr/bin/su", kind: "dir"},
			{path: "usr/bin/su/sudo", kind: "file", mode: 0o4755, data: "#!/bin/true\n"},
			{path: "usr/bin/wall", kind: "file", mode: 0o2755, gid: 5},
			{path: "empty", kind: "file"},
			{path: "abs", kind: "symlink", target: "/etc/passwd"},
			{path: "rel", kind: "symlink", target: "../x/y", uid: 7, gid: 8},
			{path: "dangling", kind: "symlink", target: "nowhere"},
			{path: "fifo", kind: "fifo", mode: 0o620},
			{path: "dev/null", kind: "char", major: 1, minor: 3, mode: 0o666},
			{path: "dev/loop0", kind: "block", major: 7, minor: 0, mode: 0o660, gid: 6},
			{path: "sock", kind: "socket"},
			{path: strings.Repeat("long/", 25) + strings.Repeat("n", 120), kind: "file", data: "deep"},
			{path: "ünïcödé", kind: "file", data: "names are bytes"},
			{path: "big-uid", kind: "file", uid: 3000000, gid: 3000000},
		},
	},
	{
		name: "whiteouts",
		nodes: []node{
			{path: "gone", kind: "whiteout"},
			{path: "d", kind: "dir"},
			{path: "d/gone-too", kind: "whiteout"},
			// Since Linux 5.8 overlayfs links every whiteout to one shared
			// device; they must stay whiteouts, not become hardlinks.
			{path: "d/shared", kind: "hardlink", target: "d/gone-too"},
			{path: "opaque", kind: "dir", mode: 0o750, xattrs: map[string]string{OpaqueXattr: "y"}},
			{path: "opaque/new", kind: "file", data: "only this survives"},
			{path: "opaque/nested", kind: "dir", xattrs: map[string]string{OpaqueXattr: "y"}},
			{path: "not-opaque", kind: "dir", xattrs: map[string]string{OpaqueXattr: "n"}},
		},
	},
	{
		name: "hardlinks",
		nodes: []node{
			{path: "x", kind: "dir"},
			{path: "x/one", kind: "file", data: "shared inode", mode: 0o4750, uid: 1, gid: 2,
				xattrs: map[string]string{"security.capability": capNetBindService()}},
			{path: "x/two", kind: "hardlink", target: "x/one"},
			{path: "y/three", kind: "dir"},
			{path: "y/three/four", kind: "hardlink", target: "x/one"},
			{path: "a-first", kind: "hardlink", target: "x/one"},
			{path: "sym", kind: "symlink", target: "x/one"},
			{path: "sym-link", kind: "hardlink", target: "sym"},
			{path: "fifo", kind: "fifo"},
			{path: "fifo2", kind: "hardlink", target: "fifo"},
		},
	},
	{
		name: "xattrs",
		nodes: []node{
			{path: "ping", kind: "file", mode: 0o755, xattrs: map[string]string{
				"security.capability":    capNetBindService(),
				"user.note":              "kept",
				"trusted.overlay.origin": "overlay bookkeeping, dropped",
				"user.overlay.impure":    "rootless overlay bookkeeping, dropped",
				"trusted.other":          "not image content, dropped",
			}},
			{path: "dir", kind: "dir", xattrs: map[string]string{"user.dir": "on a dir", "trusted.overlay.impure": "y"}},
			{path: "dir/bin", kind: "file", data: "\x7fELF", xattrs: map[string]string{"user.empty": ""}},
		},
	},
	{name: "empty"},
}

// TestRoundTrip builds each tree, writes it as a tar, checks the listing
// against its golden file, unpacks it elsewhere and writes it again: the
// two tars must be byte-identical.
func TestRoundTrip(t *testing.T) {
	requireRoot(t)
	for _, tc := range treeCases {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			build(t, src, tc.nodes)
			first := writeTar(t, src)
			if again := writeTar(t, src); !bytes.Equal(first, again) {
				t.Fatal("two WriteTar runs over the same tree differ")
			}
			golden(t, "tar-"+tc.name, listTar(t, first))

			dst := t.TempDir()
			if err := Unpack(context.Background(), bytes.NewReader(first), dst); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			golden(t, "dir-"+tc.name, listDir(t, dst))
			second := writeTar(t, dst)
			if !bytes.Equal(first, second) {
				t.Errorf("tar after round trip differs:\n--- first\n%s--- second\n%s", listTar(t, first), listTar(t, second))
			}
		})
	}
}

// tarEntry is a hand-written tar entry for Unpack tests.
type tarEntry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	data     string
	link     string
	pax      map[string]string
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if e.typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: mode, Uid: e.uid, Gid: e.gid,
			Linkname: e.link, PAXRecords: e.pax, ModTime: fixedTime}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnpack(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		entries []tarEntry
	}{
		{
			name: "whiteouts",
			entries: []tarEntry{
				{name: "./", typ: tar.TypeDir, mode: 0o700}, // root entry: ignored
				{name: "./.wh.gone", typ: tar.TypeReg},
				{name: "etc/", typ: tar.TypeDir},
				{name: "etc/.wh.hosts", typ: tar.TypeReg},
				{name: "var/lib/.wh..wh..opq", typ: tar.TypeReg}, // creates var/lib
				{name: "var/lib/apt", typ: tar.TypeReg, data: "kept: same layer"},
				{name: "replaced", typ: tar.TypeReg, data: "deleted by the next entry"},
				{name: ".wh.replaced", typ: tar.TypeReg},
				{name: "tree/", typ: tar.TypeDir},
				{name: "tree/leaf", typ: tar.TypeReg},
				{name: ".wh.tree", typ: tar.TypeReg}, // removes a whole directory
			},
		},
		{
			name: "attributes",
			entries: []tarEntry{
				{name: "/abs/file", typ: tar.TypeReg, data: "leading slash dropped"},
				{name: "missing/parents/file", typ: tar.TypeReg, uid: 1000, gid: 1000, data: "x"},
				{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, uid: 0, gid: 0, data: "setuid"},
				{name: "bin/own-su", typ: tar.TypeReg, mode: 0o6750, uid: 1000, gid: 50, data: "setuid after chown"},
				{name: "bin/ping", typ: tar.TypeReg, mode: 0o755, uid: 1000, data: "cap",
					pax: map[string]string{
						paxXattr + "security.capability":      capNetBindService(),
						paxXattr + "user.kept":                "1",
						paxXattr + "trusted.overlay.redirect": "/etc",
						paxXattr + "security.selinux":         "system_u:object_r:bin_t:s0",
					}},
				{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
				{name: "link", typ: tar.TypeSymlink, link: "/bin/su", uid: 5, gid: 5},
				{name: "hard", typ: tar.TypeLink, link: "./bin/su"},
				{name: "dir-then-file/", typ: tar.TypeDir},
				{name: "dir-then-file/child", typ: tar.TypeReg},
				{name: "dir-then-file", typ: tar.TypeReg, data: "a file now"},
				{name: "file-then-dir", typ: tar.TypeReg},
				{name: "file-then-dir/", typ: tar.TypeDir, mode: 0o711},
				{name: "symlink-then-dir", typ: tar.TypeSymlink, link: "/"},
				{name: "symlink-then-dir/", typ: tar.TypeDir},
				{name: "symlink-then-dir/inside", typ: tar.TypeReg, data: "not under /"},
				{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			if err := Unpack(context.Background(), bytes.NewReader(makeTar(t, tc.entries)), dst); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			golden(t, "unpack-"+tc.name, listDir(t, dst))
			// And back: the overlay-format dir must give the tar spelling.
			// Parents Unpack created carry the current time: pin them.
			stampTimes(t, dst)
			golden(t, "unpack-"+tc.name+"-tar", listTar(t, writeTar(t, dst)))
		})
	}
}

func TestUnpackDirMtimes(t *testing.T) {
	requireRoot(t)
	dst := t.TempDir()
	tarball := makeTar(t, []tarEntry{
		{name: "d/", typ: tar.TypeDir},
		{name: "d/e/", typ: tar.TypeDir},
		{name: "d/e/f", typ: tar.TypeReg},
		{name: "d/.wh.g", typ: tar.TypeReg},
		{name: "d/e/.wh..wh..opq", typ: tar.TypeReg},
	})
	if err := Unpack(context.Background(), bytes.NewReader(tarball), dst); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"d", "d/e", "d/e/f", "d/g"} {
		fi, err := os.Lstat(filepath.Join(dst, p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(fixedTime) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), fixedTime)
		}
	}
}

// TestUnpackEscapes: nothing a layer holds may write outside the root.
// Names climbing out are contained as BuildKit contains them ("../x" is
// "/x"); a parent that is a symlink is refused with an *EscapeError, and a
// hardlink target is resolved inside the root like a name.
func TestUnpackEscapes(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		entries func(outside string) []tarEntry
		inside  string // contained: this file lands inside the root
		escape  bool   // refused with an *EscapeError
	}{
		{name: "dotdot", inside: "victim", entries: func(string) []tarEntry {
			return []tarEntry{{name: "../victim", typ: tar.TypeReg, data: "x"}}
		}},
		{name: "dotdot after cleaning", inside: "victim", entries: func(string) []tarEntry {
			return []tarEntry{{name: "a/../../victim", typ: tar.TypeReg, data: "x"}}
		}},
		{name: "absolute dotdot", inside: "victim", entries: func(string) []tarEntry {
			return []tarEntry{{name: "/../victim", typ: tar.TypeReg, data: "x"}}
		}},
		{name: "through symlink to /", escape: true, entries: func(outside string) []tarEntry {
			// a -> / then a/<outside>/victim: were the symlink followed,
			// this would write into outside (standing in for /etc/passwd).
			return []tarEntry{
				{name: "a", typ: tar.TypeSymlink, link: "/"},
				{name: "a" + outside + "/victim", typ: tar.TypeReg, data: "x"},
			}
		}},
		{name: "through relative symlink", escape: true, entries: func(outside string) []tarEntry {
			return []tarEntry{
				{name: "a", typ: tar.TypeSymlink, link: "../" + filepath.Base(outside)},
				{name: "a/victim", typ: tar.TypeReg, data: "x"},
			}
		}},
		{name: "directory through symlink", escape: true, entries: func(outside string) []tarEntry {
			return []tarEntry{
				{name: "a", typ: tar.TypeSymlink, link: outside},
				{name: "a/sub/", typ: tar.TypeDir},
			}
		}},
		{name: "whiteout through symlink", escape: true, entries: func(outside string) []tarEntry {
			return []tarEntry{
				{name: "a", typ: tar.TypeSymlink, link: outside},
				{name: "a/.wh.victim", typ: tar.TypeReg},
			}
		}},
		{name: "opaque through symlink", escape: true, entries: func(outside string) []tarEntry {
			return []tarEntry{
				{name: "a", typ: tar.TypeSymlink, link: outside},
				{name: "a/.wh..wh..opq", typ: tar.TypeReg},
			}
		}},
		{name: "hardlink to dotdot", entries: func(outside string) []tarEntry {
			return []tarEntry{{name: "l", typ: tar.TypeLink, link: "../" + filepath.Base(outside) + "/secret"}}
		}},
		{name: "hardlink through symlink", escape: true, entries: func(outside string) []tarEntry {
			return []tarEntry{
				{name: "a", typ: tar.TypeSymlink, link: outside},
				{name: "l", typ: tar.TypeLink, link: "a/secret"},
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dst := filepath.Join(base, "root")
			outside := filepath.Join(base, "outside")
			for _, d := range []string{dst, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := Unpack(context.Background(), bytes.NewReader(makeTar(t, tc.entries(outside))), dst)
			var escape *EscapeError
			switch {
			case tc.inside != "":
				if err != nil {
					t.Fatalf("Unpack: %v", err)
				}
				if b, err := os.ReadFile(filepath.Join(dst, tc.inside)); err != nil || string(b) != "x" {
					t.Errorf("%s inside the root: %q %v", tc.inside, b, err)
				}
			case tc.escape && !errors.As(err, &escape):
				t.Fatalf("Unpack: got error %v, want an *EscapeError", err)
			case err == nil:
				t.Fatal("Unpack: no error")
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 {
				t.Errorf("something was written outside the root: %v", ents)
			}
			if _, err := os.Lstat(filepath.Join(base, "victim")); err == nil {
				t.Error("victim was created next to the root")
			}
			if _, err := os.Lstat(filepath.Join(dst, "l")); err == nil {
				t.Error("hardlink was created")
			}
		})
	}
}

// TestWriteTarRefuses covers trees that cannot be written faithfully.
func TestWriteTarRefuses(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		nodes []node
		want  string
	}{
		{"whiteout-named file", []node{{path: ".wh.x", kind: "file"}}, "reserved for whiteouts"},
		{"redirect", []node{{path: "d", kind: "dir", xattrs: map[string]string{"trusted.overlay.redirect": "/e"}}}, "redirect_dir=off"},
		{"metacopy", []node{{path: "f", kind: "file", xattrs: map[string]string{"trusted.overlay.metacopy": ""}}}, "metacopy=off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, tc.nodes)
			err := WriteTar(context.Background(), dir, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WriteTar: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	build(t, dir, []node{{path: "f", kind: "file", data: "x"}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteTar(ctx, dir, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteTar: got %v, want context.Canceled", err)
	}
	tarball := writeTar(t, dir)
	if err := Unpack(ctx, bytes.NewReader(tarball), t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Errorf("Unpack: got %v, want context.Canceled", err)
	}
}

func smallFiles(t testing.TB, n int) []node {
	nodes := make([]node, 0, n+n/100)
	for i := range n {
		if i%100 == 0 {
			nodes = append(nodes, node{path: fmt.Sprintf("d%03d", i/100), kind: "dir"})
		}
		nodes = append(nodes, node{path: fmt.Sprintf("d%03d/f%05d", i/100, i), kind: "file",
			data: strings.Repeat(fmt.Sprintf("line %d of a small file\n", i), 40)})
	}
	return nodes
}

func BenchmarkWriteTar(b *testing.B) {
	requireRoot(b)
	dir := b.TempDir()
	build(b, dir, smallFiles(b, 10000))
	var n countWriter
	if err := WriteTar(context.Background(), dir, &n); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(n))
	b.ResetTimer()
	for b.Loop() {
		if err := WriteTar(context.Background(), dir, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

func setTimes(p string, atime, mtime time.Time) error {
	ts := []unix.Timespec{{Sec: atime.Unix(), Nsec: int64(atime.Nanosecond())}, {Sec: mtime.Unix(), Nsec: int64(mtime.Nanosecond())}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
