package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CanaryTime is the mtime (and atime) of every canary entry: far from any
// time a build would set, so a changed time is seen.
var CanaryTime = time.Date(2011, 11, 11, 11, 11, 11, 0, time.UTC)

// Canary is a host directory that a malicious build tries to change: the
// directory itself (0755), a child directory "x" (0755) and a file "file"
// (0644, known content), all owned by root, with a fixed mtime and a
// user.canary extended attribute. Snapshot it before a build and call
// Check after: any change of content, mode, owner, mtime, xattrs or the set
// of entries fails the test.
type Canary struct {
	// Dir is the canary directory's absolute host path.
	Dir  string
	snap map[string]string
}

// NewCanary makes a canary in a fresh temporary directory of the test and
// snapshots it.
func NewCanary(t testing.TB) *Canary {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "canary")
	if err := makeCanary(dir); err != nil {
		t.Fatalf("making the host canary: %v", err)
	}
	snap, err := SnapshotTree(dir)
	if err != nil {
		t.Fatalf("snapshotting the host canary: %v", err)
	}
	return &Canary{Dir: dir, snap: snap}
}

// File is the canary file's absolute host path.
func (c *Canary) File() string { return filepath.Join(c.Dir, "file") }

// Rel is the canary directory as a relative path that reaches it from any
// directory of this machine: enough ".." to climb to "/" from any depth.
func (c *Canary) Rel() string {
	return strings.Repeat("../", 64) + strings.TrimPrefix(c.Dir, "/")
}

// Check fails the test, listing every difference, when the canary is no
// longer what it was when it was made.
func (c *Canary) Check(t testing.TB) {
	t.Helper()
	now, err := SnapshotTree(c.Dir)
	if err != nil {
		t.Errorf("host canary %s: %v", c.Dir, err)
		return
	}
	if d := DiffSnapshots(c.snap, now); d != "" {
		t.Errorf("host canary %s changed:\n%s", c.Dir, d)
	}
}

func makeCanary(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "x"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("host canary: must never change\n"), 0o644); err != nil {
		return err
	}
	// Children first: setting their times would not change the parent's,
	// but creating them did.
	for _, p := range []string{filepath.Join(dir, "x"), filepath.Join(dir, "file"), dir} {
		mode := os.FileMode(0o755)
		if filepath.Base(p) == "file" {
			mode = 0o644
		}
		if err := os.Lchown(p, 0, 0); err != nil && os.Geteuid() == 0 {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		if err := unix.Lsetxattr(p, "user.canary", []byte("host:"+filepath.Base(p)), 0); err != nil {
			return fmt.Errorf("setting user.canary on %s (the test needs a filesystem with user xattrs): %w", p, err)
		}
		if err := os.Chtimes(p, CanaryTime, CanaryTime); err != nil {
			return err
		}
	}
	return nil
}

// SnapshotTree describes every entry under dir (dir included, symlinks not
// followed): type and mode bits, owner, mtime to the nanosecond, size,
// content digest, link target and extended attributes. Two snapshots are
// equal exactly when nothing a build could change differs.
func SnapshotTree(dir string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d mtime=%d.%09d size=%d nlink=%d",
			st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec, st.Size, st.Nlink)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			// O_NONBLOCK: a FIFO swapped in must not hang the check.
			b, err := readNonblock(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " sha256=" + hex.EncodeToString(sum[:8])
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " link=" + target
		}
		xa, err := xattrsOf(p)
		if err != nil {
			return err
		}
		desc += " xattrs=" + xa
		out[rel] = desc
		return nil
	})
	return out, err
}

func readNonblock(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b []byte
	buf := make([]byte, 32<<10)
	for len(b) < 1<<20 {
		n, err := f.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	return b, nil
}

func xattrsOf(p string) (string, error) {
	n, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return "", nil
		}
		return "", &fs.PathError{Op: "listxattr", Path: p, Err: err}
	}
	buf := make([]byte, n)
	n, err = unix.Llistxattr(p, buf)
	if err != nil {
		return "", &fs.PathError{Op: "listxattr", Path: p, Err: err}
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			parts = append(parts, name+"=?"+err.Error())
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q", name, v[:m]))
	}
	return strings.Join(parts, ","), nil
}

// DiffSnapshots lists, one line each, the entries that differ between two
// SnapshotTree results; "" when they are equal.
func DiffSnapshots(before, after map[string]string) string {
	var keys []string
	seen := map[string]bool{}
	for k := range before {
		keys, seen[k] = append(keys, k), true
	}
	for k := range after {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		was, ok1 := before[k]
		is, ok2 := after[k]
		switch {
		case !ok1:
			fmt.Fprintf(&b, "  %s: appeared: %s\n", k, is)
		case !ok2:
			fmt.Fprintf(&b, "  %s: vanished (was %s)\n", k, was)
		case was != is:
			fmt.Fprintf(&b, "  %s:\n    was %s\n    now %s\n", k, was, is)
		}
	}
	return b.String()
}
