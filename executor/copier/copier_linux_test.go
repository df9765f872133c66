package copier

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/layer/gzchunk"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// Fixed times, so listings can say whose timestamps an entry carries.
var (
	srcTime = time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	dstTime = time.Date(2021, 6, 7, 8, 9, 10, 11, time.UTC)
	tarTime = time.Date(2019, 3, 4, 5, 6, 7, 0, time.UTC)
)

// builder writes test trees; every helper fails the test on error.
type builder struct {
	t    *testing.T
	root string
}

func (b builder) p(rel string) string { return filepath.Join(b.root, rel) }

func (b builder) dir(rel string, mode os.FileMode) {
	b.t.Helper()
	if err := os.MkdirAll(b.p(rel), 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(rel, mode)
}

func (b builder) file(rel, content string, mode os.FileMode) {
	b.t.Helper()
	b.raw(rel, []byte(content), mode)
}

func (b builder) raw(rel string, data []byte, mode os.FileMode) {
	b.t.Helper()
	if err := os.MkdirAll(filepath.Dir(b.p(rel)), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(b.p(rel), data, 0o600); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(rel, mode)
}

func (b builder) chmod(rel string, mode os.FileMode) {
	b.t.Helper()
	if err := os.Chmod(b.p(rel), mode); err != nil {
		b.t.Fatal(err)
	}
}

func (b builder) symlink(rel, target string) {
	b.t.Helper()
	if err := os.MkdirAll(filepath.Dir(b.p(rel)), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Symlink(target, b.p(rel)); err != nil {
		b.t.Fatal(err)
	}
}

func (b builder) hardlink(rel, existing string) {
	b.t.Helper()
	if err := os.Link(b.p(existing), b.p(rel)); err != nil {
		b.t.Fatal(err)
	}
}

func (b builder) chown(rel string, uid, gid int) {
	b.t.Helper()
	if err := os.Lchown(b.p(rel), uid, gid); err != nil {
		b.t.Fatal(err)
	}
}

func (b builder) xattr(rel, key string, val []byte) {
	b.t.Helper()
	if err := unix.Lsetxattr(b.p(rel), key, val, 0); err != nil {
		b.t.Fatalf("setxattr %s on %s: %v", key, rel, err)
	}
}

func (b builder) mknod(rel string, mode uint32, dev int) {
	b.t.Helper()
	if err := unix.Mknod(b.p(rel), mode, dev); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(rel, fs.FileMode(mode&0o777)) // mknod is subject to the umask
}

// passwd writes the user databases --chown and WORKDIR resolve names in.
func (b builder) passwd() {
	b.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"+
		"app:x:1000:1001:app:/home/app:/bin/sh\n", 0o644)
	b.file("etc/group", "root:x:0:\n# a comment\nnogroup:x:65534:\napp:x:1001:\nstaff:x:50:app\n", 0o644)
}

// setTimesUnder gives every entry under root the time tm.
func setTimesUnder(t *testing.T, root string, tm time.Time) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(tm.UnixNano()), unix.NsecToTimespec(tm.UnixNano())}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// listing describes a tree, one entry a line: path, type, mode with
// setuid/setgid/sticky, owner, size, content hash, whose mtime it has, link
// target, hardlink group and extended attributes.
func listing(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		var typ string
		switch m := fi.Mode(); {
		case m.IsDir():
			typ = "dir"
		case m.IsRegular():
			typ = "file"
		case m&fs.ModeSymlink != 0:
			typ = "symlink"
		case m&fs.ModeNamedPipe != 0:
			typ = "fifo"
		case m&fs.ModeCharDevice != 0:
			typ = fmt.Sprintf("char(%d,%d)", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case m&fs.ModeDevice != 0:
			typ = fmt.Sprintf("block(%d,%d)", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		default:
			typ = "other"
		}
		line := fmt.Sprintf("%s %s %04o %d:%d", rel, typ, st.Mode&0o7777, st.Uid, st.Gid)
		if typ == "file" {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			line += fmt.Sprintf(" size=%d sha=%s", len(data), hex.EncodeToString(sum[:])[:12])
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					line += " hardlink=" + first
				} else {
					inodes[st.Ino] = rel
				}
			}
		}
		if typ == "symlink" {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		}
		mt := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
		switch {
		case mt.Equal(srcTime):
			line += " mtime=src"
		case mt.Equal(dstTime):
			line += " mtime=dst"
		case mt.Equal(tarTime):
			line += " mtime=tar"
		default:
			line += " mtime=new"
		}
		names, _ := hostXattrs(p)
		sort.Strings(names)
		for _, n := range names {
			if !strings.HasPrefix(n, "user.") && n != "security.capability" {
				continue
			}
			v := make([]byte, 4096)
			k, _ := unix.Lgetxattr(p, n, v)
			line += fmt.Sprintf(" xattr:%s=%q", n, v[:max(k, 0)])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n") + "\n"
}

type copyCase struct {
	name string
	src  func(b builder)
	dst  func(b builder)
	op   Op
	// check inspects the error beyond its text in the golden file.
	check func(t *testing.T, err error)
}

// capV2 is a security.capability value granting cap_net_bind_service
// (bit 10) as permitted and effective.
var capV2 = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

func wantNotFound(path, excludedBy string) func(t *testing.T, err error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var nf *NotFoundError
		if !errors.As(err, &nf) {
			t.Fatalf("error %v is not a *NotFoundError", err)
		}
		if nf.Path != path || nf.ExcludedBy != excludedBy {
			t.Errorf("NotFoundError{%q, %q}, want {%q, %q}", nf.Path, nf.ExcludedBy, path, excludedBy)
		}
	}
}

func wantNoError(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
}

func basicSrc(b builder) {
	b.file("a.txt", "alpha\n", 0o644)
	b.file("b.txt", "bravo\n", 0o600)
	b.dir("dir", 0o750)
	b.file("dir/one", "one\n", 0o644)
	b.dir("dir/sub", 0o700)
	b.file("dir/sub/two", "two\n", 0o755)
}

func copyCases() []copyCase {
	return []copyCase{
		{
			name: "file_to_file",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/b.txt"},
		},
		{
			name: "file_to_dir_slash",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/"},
		},
		{
			name: "file_to_dir_dot",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/."},
		},
		{
			name: "file_into_existing_dir",
			src:  basicSrc,
			dst:  func(b builder) { b.dir("app", 0o700); b.chown("app", 5, 6) },
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app"},
		},
		{
			name: "file_overwrites_file",
			src:  basicSrc,
			dst:  func(b builder) { b.file("app/a.txt", "old contents\n", 0o777); b.chown("app/a.txt", 9, 9) },
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/"},
		},
		{
			name: "dir_contents",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"dir"}, Dest: "/app"},
		},
		{
			// The top directory keeps its mode and owner and takes the
			// source's times; directories below merge and take the source's
			// metadata; files are replaced.
			name: "dir_merges_onto_existing",
			src:  basicSrc,
			dst: func(b builder) {
				b.dir("app", 0o711)
				b.chown("app", 7, 7)
				b.dir("app/sub", 0o777)
				b.chown("app/sub", 7, 7)
				b.file("app/sub/keep", "kept\n", 0o600)
				b.file("app/one", "old one\n", 0o600)
			},
			op: Op{Kind: "copy", Sources: []string{"dir/"}, Dest: "/app/"},
		},
		{
			name: "dir_onto_file_fails",
			src:  basicSrc,
			dst:  func(b builder) { b.file("app/sub", "a file\n", 0o644) },
			op:   Op{Kind: "copy", Sources: []string{"dir"}, Dest: "/app"},
		},
		{
			name: "file_onto_dir_fails",
			src:  basicSrc,
			dst:  func(b builder) { b.dir("app/a.txt/x", 0o755) },
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/"},
		},
		{
			name: "dot_to_app",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"."}, Dest: "/app/"},
		},
		{
			name: "several_sources",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt", "b.txt", "dir"}, Dest: "/app/"},
		},
		{
			// BuildKit copies each source on its own and does not insist on
			// a trailing slash: the last file wins (moby/buildkit#1853).
			name: "several_files_no_slash",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt", "b.txt"}, Dest: "/dest"},
		},
		{
			name: "wildcards",
			src: func(b builder) {
				b.file("foo.go", "foo\n", 0o644)
				b.file("bar.go", "bar\n", 0o644)
				b.file("notes.txt", "notes\n", 0o644)
				b.file("sub/dir1/dir2/foo", "deep\n", 0o644)
				b.file("sub/dirX/dir2/foo", "deepX\n", 0o644)
				b.file("sub/file", "file\n", 0o644)
			},
			op: Op{Kind: "copy", Sources: []string{"*.go", "sub/*/dir2/foo", "sub/dir?", "nomatch*"}, Dest: "/dst/"},
		},
		{
			// BuildKit: one match to a path without a trailing slash is a
			// file at that path (dockerfile_copy_test testCopyWildcards).
			name: "wildcard_single_match_to_file",
			src: func(b builder) {
				b.file("foo.go", "foo\n", 0o644)
			},
			op: Op{Kind: "copy", Sources: []string{"f*.go"}, Dest: "/foo2.go"},
		},
		{
			name:  "wildcard_no_match",
			src:   basicSrc,
			op:    Op{Kind: "copy", Sources: []string{"nomatch*"}, Dest: "/app/"},
			check: wantNoError,
		},
		{
			name:  "wildcard_missing_base",
			src:   basicSrc,
			op:    Op{Kind: "copy", Sources: []string{"nodir/*.go"}, Dest: "/app/"},
			check: wantNotFound("nodir", ""),
		},
		{
			name:  "not_found",
			src:   basicSrc,
			op:    Op{Kind: "copy", Sources: []string{"a.txt", "missing/x"}, Dest: "/app/"},
			check: wantNotFound("missing/x", ""),
		},
		{
			name: "symlink_source_followed",
			src: func(b builder) {
				basicSrc(b)
				b.symlink("link.txt", "a.txt")
				b.symlink("linkdir", "dir")
				b.symlink("via", "dir/sub")
			},
			op: Op{Kind: "copy", Sources: []string{"link.txt", "linkdir", "via/two"}, Dest: "/app/"},
		},
		{
			name: "symlink_inside_dir_kept",
			src: func(b builder) {
				b.file("tree/real", "real\n", 0o644)
				b.symlink("tree/rel", "real")
				b.symlink("tree/abs", "/etc/passwd")
				b.symlink("tree/dangling", "nowhere")
			},
			op: Op{Kind: "copy", Sources: []string{"tree"}, Dest: "/app/"},
		},
		{
			name: "dotdot_contained",
			src: func(b builder) {
				b.file("etc/passwd", "context passwd\n", 0o644)
			},
			op: Op{Kind: "copy", Sources: []string{"../../etc/passwd"}, Dest: "/got"},
		},
		{
			name: "symlink_outside_contained",
			src: func(b builder) {
				b.file("etc/hostname", "context hostname\n", 0o644)
				b.file("inside/x", "inside x\n", 0o644)
				b.symlink("abs", "/etc/hostname")
				b.symlink("up", "../../../../etc/hostname")
				b.symlink("d/updir", "../../../inside")
			},
			op: Op{Kind: "copy", Sources: []string{"abs", "up", "d/updir/x"}, Dest: "/got/"},
		},
		{
			name: "dest_symlink_contained",
			src:  basicSrc,
			dst: func(b builder) {
				b.dir("real", 0o755)
				b.symlink("app", "/real")
				b.symlink("esc", "../../../../outside")
			},
			op: Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/"},
		},
		{
			name: "dest_symlink_escape_contained",
			src:  basicSrc,
			dst:  func(b builder) { b.symlink("esc", "../../../../outside") },
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/esc/"},
		},
		{
			name: "chown_names",
			src:  basicSrc,
			dst:  func(b builder) { b.passwd() },
			op:   Op{Kind: "copy", Sources: []string{"a.txt", "dir"}, Dest: "/app/", Chown: "app:staff"},
		},
		{
			name: "chown_user_only",
			src:  basicSrc,
			dst:  func(b builder) { b.passwd() },
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/", Chown: "app"},
		},
		{
			// A number alone is uid and gid (BuildKit's readUser, ByID).
			name: "chown_numeric",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt", "b.txt"}, Dest: "/app/", Chown: "1234"},
		},
		{
			name: "chown_numeric_pair",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"dir"}, Dest: "/app/", Chown: "1234:5678"},
		},
		{
			// BuildKit does not fail on a name missing from /etc/passwd:
			// the ids stay 0.
			name:  "chown_unknown_name",
			src:   basicSrc,
			dst:   func(b builder) { b.passwd() },
			op:    Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/", Chown: "ghost:app"},
			check: wantNoError,
		},
		{
			name: "chown_implicit_parents",
			src:  basicSrc,
			dst:  func(b builder) { b.passwd() },
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/owned/deep/x", Chown: "nobody"},
		},
		{
			name: "existing_parent_kept",
			src:  basicSrc,
			dst:  func(b builder) { b.dir("app", 0o700); b.chown("app", 5, 5) },
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/sub/x", Chown: "1:1"},
		},
		{
			name: "chmod_octal",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt", "dir"}, Dest: "/new/app/", Chmod: "640"},
		},
		{
			name: "chmod_octal_special",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/", Chmod: "4755"},
		},
		{
			name: "chmod_symbolic",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"dir", "b.txt"}, Dest: "/new/app/", Chmod: "u=rwX,go=rX"},
		},
		{
			name: "chmod_invalid",
			src:  basicSrc,
			op:   Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/app/", Chmod: "999"},
		},
		{
			name: "context_copy_is_root_owned",
			src: func(b builder) {
				basicSrc(b)
				b.chown("a.txt", 1234, 5678)
				b.chown("dir", 1234, 5678)
				b.chown("dir/sub/two", 42, 43)
			},
			op: Op{Kind: "copy", Sources: []string{"a.txt", "dir"}, Dest: "/app/"},
		},
		{
			name: "from_stage_keeps_owner",
			src: func(b builder) {
				basicSrc(b)
				b.chown("a.txt", 1234, 5678)
				b.chown("dir", 1234, 5678)
				b.chown("dir/sub", 11, 12)
				b.chown("dir/sub/two", 42, 43)
				b.symlink("dir/lnk", "one")
				b.chown("dir/lnk", 77, 78)
			},
			op: Op{Kind: "copy", Sources: []string{"a.txt", "dir"}, Dest: "/app/", FromStage: true},
		},
		{
			name: "from_stage_chown_wins",
			src: func(b builder) {
				basicSrc(b)
				b.chown("dir/sub/two", 42, 43)
			},
			op: Op{Kind: "copy", Sources: []string{"dir"}, Dest: "/app/", FromStage: true, Chown: "3:4"},
		},
		{
			// Hardlinks are kept within a copied directory; BuildKit copies
			// each source and each wildcard match with its own fsutil
			// copier, so not between them.
			name: "hardlinks",
			src: func(b builder) {
				b.file("d/a", "shared\n", 0o644)
				b.hardlink("d/b", "d/a")
				b.dir("d/sub", 0o755)
				b.hardlink("d/sub/c", "d/a")
				b.file("x1", "x\n", 0o644)
				b.hardlink("x2", "x1")
			},
			op: Op{Kind: "copy", Sources: []string{"d", "x*"}, Dest: "/app/"},
		},
		{
			name: "hardlinks_across_sources",
			src: func(b builder) {
				b.file("a", "shared\n", 0o644)
				b.hardlink("b", "a")
			},
			op: Op{Kind: "copy", Sources: []string{"a", "b"}, Dest: "/app/"},
		},
		{
			name: "special_bits",
			src: func(b builder) {
				b.file("bin/su", "su\n", 0o755)
				b.chmod("bin/su", 0o755|os.ModeSetuid)
				b.file("bin/sg", "sg\n", 0o755)
				b.chmod("bin/sg", 0o755|os.ModeSetgid)
				b.dir("tmp", 0o777)
				b.chmod("tmp", 0o777|os.ModeSticky)
				b.dir("shared", 0o775)
				b.chmod("shared", 0o775|os.ModeSetgid)
			},
			op: Op{Kind: "copy", Sources: []string{"."}, Dest: "/"},
		},
		{
			name: "special_bits_from_stage_chown",
			src: func(b builder) {
				b.file("bin/ping", "ping\n", 0o755)
				b.chown("bin/ping", 5, 5) // before chmod: chown clears setuid
				b.chmod("bin/ping", 0o755|os.ModeSetuid)
			},
			op: Op{Kind: "copy", Sources: []string{"bin"}, Dest: "/usr/bin/", FromStage: true, Chown: "0:0"},
		},
		{
			name: "xattrs",
			src: func(b builder) {
				b.file("bin/ping", "ping\n", 0o755)
				b.xattr("bin/ping", "security.capability", capV2)
				b.xattr("bin/ping", "user.note", []byte("hello"))
				b.dir("d/inner", 0o755)
				b.xattr("d/inner", "user.dir", []byte("yes"))
				b.symlink("d/inner/lnk", "x")
			},
			op: Op{Kind: "copy", Sources: []string{"bin", "d"}, Dest: "/app/", Chown: "1:1"},
		},
		{
			name: "fifo_and_devices",
			src: func(b builder) {
				b.dir("dev", 0o755)
				b.mknod("dev/fifo", unix.S_IFIFO|0o640, 0)
				b.mknod("dev/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
				b.mknod("dev/loop9", unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9)))
			},
			op: Op{Kind: "copy", Sources: []string{"dev"}, Dest: "/dev/", FromStage: true},
		},
		{
			// A stage rootfs seen through overlayfs never shows whiteouts,
			// but an upper directory or a naively unpacked layer would.
			name: "whiteouts_skipped",
			src: func(b builder) {
				b.file("d/keep", "keep\n", 0o644)
				b.mknod("d/gone", unix.S_IFCHR|0o000, 0)
				b.file("d/.wh.old", "", 0o644)
				b.file("d/.wh..wh..opq", "", 0o644)
				b.mknod("d/.wh.x", unix.S_IFCHR|0o000, 0)
			},
			op: Op{Kind: "copy", Sources: []string{"d"}, Dest: "/app/", FromStage: true},
		},
		{
			name:  "whiteout_named_source_not_found",
			src:   func(b builder) { b.mknod("gone", unix.S_IFCHR|0o000, 0) },
			op:    Op{Kind: "copy", Sources: []string{"gone"}, Dest: "/app/", FromStage: true},
			check: wantNotFound("gone", ""),
		},
		{
			name: "dockerignore",
			src: func(b builder) {
				b.file("Dockerfile", "FROM scratch\n", 0o644)
				b.file(".dockerignore", "*.log\n", 0o644)
				b.file("app.log", "log\n", 0o644)
				b.file("keep.log", "kept log\n", 0o644)
				b.file("main.go", "main\n", 0o644)
				b.file("node_modules/x/index.js", "x\n", 0o644)
				b.file("build/out/bin", "bin\n", 0o755)
				b.file("build/out/junk", "junk\n", 0o644)
				b.file("build/tmp/t", "t\n", 0o644)
				b.file("secrets/key", "key\n", 0o600)
				b.file("src/a.go", "a\n", 0o644)
				b.file("src/a_test.go", "test\n", 0o644)
				b.symlink("linked", "secrets/key")
			},
			op: Op{Kind: "copy", Sources: []string{"."}, Dest: "/app/", Excludes: []string{
				"*.log", "!keep.log", "node_modules", "build", "!build/out/bin", "/secrets", "**/*_test.go",
			}},
		},
		{
			name: "dockerignore_wildcard_and_dir_source",
			src: func(b builder) {
				b.file("a.log", "a\n", 0o644)
				b.file("b.txt", "b\n", 0o644)
				b.file("build/out/bin", "bin\n", 0o755)
				b.file("build/out/junk", "junk\n", 0o644)
			},
			op: Op{Kind: "copy", Sources: []string{"*", "build"}, Dest: "/app/", Excludes: []string{
				"*.log", "build", "!build/out/bin",
			}},
		},
		{
			name:  "dockerignore_excluded_source",
			src:   func(b builder) { b.file("secrets/key", "key\n", 0o600) },
			op:    Op{Kind: "copy", Sources: []string{"secrets/key"}, Dest: "/app/", Excludes: []string{"secrets"}},
			check: wantNotFound("secrets/key", "secrets"),
		},
		{
			name: "dockerignore_excluded_via_symlink",
			src: func(b builder) {
				b.file("secrets/key", "key\n", 0o600)
				b.symlink("linked", "secrets/key")
			},
			op:    Op{Kind: "copy", Sources: []string{"linked"}, Dest: "/app/", Excludes: []string{"secrets/*"}},
			check: wantNotFound("linked", "secrets/*"),
		},
		{
			// .dockerignore is for the build context only (DESIGN item 9):
			// the planner leaves Excludes empty for COPY --from.
			name: "from_stage_ignores_nothing",
			src: func(b builder) {
				b.file("app.log", "log\n", 0o644)
			},
			op: Op{Kind: "copy", Sources: []string{"app.log"}, Dest: "/", FromStage: true},
		},
		{
			name: "add_plain_file",
			src:  basicSrc,
			op:   Op{Kind: "add", Sources: []string{"a.txt", "dir"}, Dest: "/app/"},
		},
		{
			// Detection is by content: a gzip that holds no tar is copied.
			name: "add_gzip_not_tar",
			src: func(b builder) {
				var buf bytes.Buffer
				zw := gzip.NewWriter(&buf)
				zw.Write([]byte("not a tar\n"))
				zw.Close()
				b.raw("notes.txt.gz", buf.Bytes(), 0o644)
				b.raw("fake.tar.gz", []byte("plain text\n"), 0o644)
			},
			op: Op{Kind: "add", Sources: []string{"notes.txt.gz", "fake.tar.gz"}, Dest: "/app/"},
		},
		{
			name: "add_tar_root_entry_keeps_dest",
			src:  func(b builder) { b.raw("a.tar", testArchive(nil), 0o644) },
			dst:  func(b builder) { b.dir("app", 0o700); b.chown("app", 7, 8) },
			op:   Op{Kind: "add", Sources: []string{"a.tar"}, Dest: "/app"},
		},
		{
			// go-archive skips only "./"; an absolute "/" entry (tar -P)
			// is merged onto the destination, as buildkitd does.
			name: "add_tar_slash_entry_merges",
			src: func(b builder) {
				b.raw("a.tar", testArchive([]tar.Header{{Name: "/", Typeflag: tar.TypeDir, Mode: 0o775, Uid: 3, Gid: 3}}), 0o644)
			},
			dst: func(b builder) { b.dir("app", 0o700); b.chown("app", 7, 8) },
			op:  Op{Kind: "add", Sources: []string{"a.tar"}, Dest: "/app"},
		},
		{
			name: "add_tar_chown",
			src:  func(b builder) { b.raw("a.tar", testArchive(nil), 0o644) },
			op:   Op{Kind: "add", Sources: []string{"a.tar"}, Dest: "/new/app/", Chown: "3:4", Chmod: "600"},
		},
		{
			name: "add_tar_over_existing",
			src:  func(b builder) { b.raw("a.tar", testArchive(nil), 0o644) },
			dst: func(b builder) {
				b.dir("app/bin", 0o700)
				b.file("app/bin/tool", "old tool\n", 0o600)
				b.dir("app/elsewhere", 0o711)
				b.symlink("app/data", "/elsewhere")
				b.file("app/other", "untouched\n", 0o644)
			},
			op: Op{Kind: "add", Sources: []string{"a.tar"}, Dest: "/app/"},
		},
		{
			// go-archive sees the dangling symlink as the parent and fails
			// to create through it; nothing is created outside dest.
			name: "add_tar_dangling_symlink_parent",
			src:  func(b builder) { b.raw("a.tar", testArchive(nil), 0o644) },
			dst:  func(b builder) { b.symlink("app/data", "/elsewhere") },
			op:   Op{Kind: "add", Sources: []string{"a.tar"}, Dest: "/app/"},
		},
		{
			name: "add_wildcard_archives_and_files",
			src: func(b builder) {
				b.raw("pkg/one.tar", testArchive(nil), 0o644)
				b.file("pkg/readme", "readme\n", 0o644)
			},
			op: Op{Kind: "add", Sources: []string{"pkg/*"}, Dest: "/opt/"},
		},
		{
			name: "add_tar_through_symlink_in_archive",
			src: func(b builder) {
				b.raw("a.tar", testArchive([]tar.Header{
					{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: "/", Mode: 0o777},
					{Name: "etc/evil", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
				}), 0o644)
			},
			op: Op{Kind: "add", Sources: []string{"a.tar"}, Dest: "/app/"},
		},
	}
}

// testArchive builds a tar with a root entry, implied parents, special
// bits, xattrs, links and an entry trying to escape; extra entries are
// appended (regular files get "data!" as content).
func testArchive(extra []tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o777, Uid: 0, Gid: 0},
		{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 10, Gid: 20},
		{Name: "./bin/tool", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 10, Gid: 20, Size: 5,
			PAXRecords: map[string]string{"SCHILY.xattr.user.note": "hi"}},
		{Name: "./bin/link", Typeflag: tar.TypeSymlink, Linkname: "tool", Mode: 0o777, Uid: 10, Gid: 20},
		{Name: "./bin/hard", Typeflag: tar.TypeLink, Linkname: "./bin/tool", Mode: 0o4755, Uid: 10, Gid: 20},
		{Name: "data/x.txt", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000, Size: 5},
		{Name: "../escape.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "/abs.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o600},
	}
	for _, h := range append(entries, extra...) {
		h.ModTime = tarTime
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			panic(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("data!")[:h.Size])
		}
	}
	tw.Close()
	return buf.Bytes()
}

// hostXattrs lists the extended attributes of a host path, for listings.
func hostXattrs(p string) ([]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, b := range bytes.Split(buf[:n], []byte{0}) {
		if len(b) > 0 {
			names = append(names, string(b))
		}
	}
	return names, nil
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "skipping: the copier sets owners (0:0 for build-context files) and creates devices, which needs root")
	}
}

// runCase builds the trees, runs Do, and compares the destination listing
// (and error) with testdata/<name>.golden; then the same with files
// copied on several workers (DoWith), which must give the same tree.
func runCase(t *testing.T, name string, src, dst func(builder), op func(srcRoot string) Op, check func(*testing.T, error)) {
	t.Helper()
	runCaseWith(t, name, src, dst, op, check, Options{})
	t.Run("workers", func(t *testing.T) {
		runCaseWith(t, name, src, dst, op, check, Options{Workers: 4})
	})
	t.Run("overlay", func(t *testing.T) {
		runCaseOverlay(t, src, dst, op)
	})
}

// caseTrees builds a case's source tree in tmp/src and its destination
// tree in tmp/dstName, with the fixed times listings name.
func caseTrees(t *testing.T, tmp, dstName string, src, dst func(builder)) (srcRoot, dstRoot string) {
	t.Helper()
	srcRoot, dstRoot = filepath.Join(tmp, "src"), filepath.Join(tmp, dstName)
	for _, d := range []string{srcRoot, dstRoot} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if src != nil {
		src(builder{t, srcRoot})
	}
	if dst != nil {
		dst(builder{t, dstRoot})
	}
	setTimesUnder(t, srcRoot, srcTime)
	setTimesUnder(t, dstRoot, dstTime)
	return srcRoot, dstRoot
}

func runCaseWith(t *testing.T, name string, src, dst func(builder), op func(srcRoot string) Op, check func(*testing.T, error), opt Options) {
	t.Helper()
	tmp := t.TempDir()
	srcRoot, dstRoot := caseTrees(t, tmp, "dst", src, dst)

	err := DoWith(srcRoot, dstRoot, op(srcRoot), opt)
	if check != nil {
		check(t, err)
	}
	var got strings.Builder
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, tmp) {
			t.Errorf("error names a host path: %v", err)
		}
		fmt.Fprintf(&got, "error: %s\n", msg)
	}
	got.WriteString(listing(t, dstRoot))
	compareGolden(t, name, got.String())
}

func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("listing differs from %s (run with -update to accept):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestCopy(t *testing.T) {
	requireRoot(t)
	for _, tc := range copyCases() {
		t.Run(tc.name, func(t *testing.T) {
			runCase(t, tc.name, tc.src, tc.dst, func(string) Op { return tc.op }, tc.check)
		})
	}
}

// TestAddArchives extracts the same archive under every compression ADD
// detects; all must give the same tree.
func TestAddArchives(t *testing.T) {
	requireRoot(t)
	plain := testArchive(nil)
	compress := map[string]func() []byte{
		"tar": func() []byte { return plain },
		"tar.gz": func() []byte {
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write(plain)
			w.Close()
			return b.Bytes()
		},
		"tar.kiln.gz": func() []byte { // kiln's chunked gzip
			var b bytes.Buffer
			w, err := gzchunk.NewWriter(&b, 6)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(plain)
			w.Close()
			return b.Bytes()
		},
		"tar.xz": func() []byte {
			var b bytes.Buffer
			w, err := xz.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(plain)
			w.Close()
			return b.Bytes()
		},
		"tar.zst": func() []byte {
			var b bytes.Buffer
			w, err := zstd.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(plain)
			w.Close()
			return b.Bytes()
		},
		"tar.bz2": func() []byte { return bzip2Fixture(t, plain) },
	}
	for _, ext := range []string{"tar", "tar.gz", "tar.kiln.gz", "tar.bz2", "tar.xz", "tar.zst"} {
		t.Run(ext, func(t *testing.T) {
			data := compress[ext]()
			src := func(b builder) {
				// Named without an extension: detection is by content.
				b.raw("archive", data, 0o644)
				b.symlink("link-to-archive", "archive")
			}
			runCase(t, "add_archive", src, nil, func(string) Op {
				return Op{Kind: "add", Sources: []string{"link-to-archive"}, Dest: "/app"}
			}, wantNoError)
		})
	}
}

// bzip2Fixture returns testdata/archive.tar.bz2 — Go cannot write bzip2 —
// after checking it still holds plain; -update regenerates it with bzip2(1).
func bzip2Fixture(t *testing.T, plain []byte) []byte {
	t.Helper()
	const fixture = "testdata/archive.tar.bz2"
	if *update {
		cmd := exec.Command("bzip2", "-c", "-9")
		cmd.Stdin = bytes.NewReader(plain)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("compressing the bzip2 fixture with bzip2(1): %v", err)
		}
		if err := os.WriteFile(fixture, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(data)))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("%s is stale (err %v): run with -update", fixture, err)
	}
	return data
}

type mkdirCase struct {
	name  string
	dst   func(b builder)
	dest  string
	user  string
	check func(t *testing.T, err error)
}

func TestMkdir(t *testing.T) {
	requireRoot(t)
	cases := []mkdirCase{
		{name: "mkdir_root_user", dest: "/a/b/c", check: wantNoError},
		{name: "mkdir_user_name", dst: func(b builder) { b.passwd(); b.dir("a", 0o700) }, dest: "/a/b/c", user: "app", check: wantNoError},
		{name: "mkdir_user_group", dst: func(b builder) { b.passwd() }, dest: "/w/x", user: "app:staff", check: wantNoError},
		{name: "mkdir_user_numeric", dest: "/srv/data", user: "1000", check: wantNoError},
		{name: "mkdir_user_unknown", dst: func(b builder) { b.passwd() }, dest: "/x", user: "ghost", check: wantNoError},
		{name: "mkdir_existing_untouched", dst: func(b builder) { b.dir("app", 0o700); b.chown("app", 9, 9) }, dest: "/app", user: "1000", check: wantNoError},
		{name: "mkdir_through_symlink", dst: func(b builder) { b.dir("real", 0o755); b.symlink("link", "/real") }, dest: "/link/sub", user: "5:6", check: wantNoError},
		{name: "mkdir_dotdot_contained", dest: "/../../a", check: wantNoError},
		{name: "mkdir_file_in_the_way", dst: func(b builder) { b.file("app", "file\n", 0o644) }, dest: "/app/sub"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runCase(t, tc.name, nil, tc.dst, func(string) Op {
				return Op{Kind: "mkdir", Dest: tc.dest, User: tc.user}
			}, tc.check)
		})
	}
}
