package layer

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/userns"
)

// Unpack reads an uncompressed layer tar from r and applies it to dir in
// overlay format: .wh.NAME becomes a 0:0 character device NAME and
// DIR/.wh..wh..opq sets trusted.overlay.opaque=y on DIR, so that dir can be
// used directly as an overlay lowerdir.
//
// Ownership, permission bits (setuid/setgid/sticky included), the layer's
// xattrs and mtimes are restored; directory mtimes are set last, since
// creating their children changes them. Missing parent directories are
// created 0755. An entry that would land outside dir, lexically or through
// a symlink, is refused, and so is a hardlink to such a path. The root
// entry ("./") is skipped: a layer does not set the attributes of /.
//
// Unpack needs root (mknod, chown, trusted.* xattrs). It reads r to EOF,
// past the end-of-archive marker, so a caller hashing r sees every byte.
func Unpack(ctx context.Context, r io.Reader, dir string) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	u := &unpacker{
		root:     dir,
		dirs:     make(map[string]struct{}),
		dirTimes: make(map[string]time.Time),
		buf:      *bp,
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer tar: %w", err)
		}
		if err := u.entry(ctx, hdr, tr); err != nil {
			return err
		}
	}
	for rel, mtime := range u.dirTimes {
		if err := setTimes(filepath.Join(u.root, rel), mtime, mtime); err != nil {
			return err
		}
	}
	if _, err := copyBuffer(ctx, io.Discard, r, -1, u.buf); err != nil {
		return fmt.Errorf("reading past the end of the layer tar: %w", err)
	}
	return nil
}

type unpacker struct {
	root string
	// dirs holds relative paths checked to be real directories (not
	// symlinks) in this run, so that resolving a path costs one lstat per
	// new directory, not one per component per entry. A path leaves the
	// set only when Unpack itself removes it (see forget).
	dirs     map[string]struct{}
	dirTimes map[string]time.Time // mtimes of directory entries, applied last
	buf      []byte
}

// cleanName turns a tar entry name into a clean relative path, or "." for
// the root. Leading "/" and "./" are dropped, the way every layer applier
// treats them; anything climbing above the root is refused.
func cleanName(name string) (string, error) {
	rel := path.Clean(strings.TrimLeft(name, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", &EscapeError{Name: name, Reason: `".." leads above the root`}
	}
	return rel, nil
}

// resolve maps a tar entry name (or hardlink target) to its path under the
// root. It is the one place where paths are checked: the name must not
// climb out of the root and no parent component may be a symlink, since
// following one could land anywhere on the host. The final component is
// never followed either; callers lstat it. Missing parents are created
// 0755 when mkParents is set, as layers often omit directory entries.
func (u *unpacker) resolve(name string, mkParents bool) (rel, full string, err error) {
	rel, err = cleanName(name)
	if err != nil {
		return "", "", err
	}
	if rel != "." {
		if err := u.checkDir(name, path.Dir(rel), mkParents); err != nil {
			return "", "", err
		}
	}
	return rel, filepath.Join(u.root, rel), nil
}

// checkDir makes sure rel is a real directory under the root, checking each
// of its parents first.
func (u *unpacker) checkDir(name, rel string, create bool) error {
	if rel == "." {
		return nil
	}
	if _, ok := u.dirs[rel]; ok {
		return nil
	}
	if err := u.checkDir(name, path.Dir(rel), create); err != nil {
		return err
	}
	full := filepath.Join(u.root, rel)
	var st unix.Stat_t
	err := unix.Lstat(full, &st)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return &EscapeError{Name: name, Reason: fmt.Sprintf("parent %q is a symlink", rel)}
	case err == nil:
		return fmt.Errorf("unpacking %s: parent %s is not a directory", name, rel)
	case errors.Is(err, unix.ENOENT) && create:
		if err := os.Mkdir(full, 0o755); err != nil {
			return fmt.Errorf("creating parent directory of %s: %w", name, err)
		}
		// Mkdir honours the umask; parents are 0755 whatever it is.
		if err := os.Chmod(full, 0o755); err != nil {
			return fmt.Errorf("creating parent directory of %s: %w", name, err)
		}
	default:
		return fmt.Errorf("resolving %s: %w", name, &os.PathError{Op: "lstat", Path: full, Err: err})
	}
	u.dirs[rel] = struct{}{}
	return nil
}

// forget drops rel and everything below it from the directory caches after
// Unpack removed it, so a later symlink at the same path is noticed.
func (u *unpacker) forget(rel string) {
	prefix := rel + "/"
	for d := range u.dirs {
		if d == rel || strings.HasPrefix(d, prefix) {
			delete(u.dirs, d)
		}
	}
	for d := range u.dirTimes {
		if d == rel || strings.HasPrefix(d, prefix) {
			delete(u.dirTimes, d)
		}
	}
}

// remove deletes whatever is at rel, if anything, without following it.
func (u *unpacker) remove(rel, full string) error {
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err := os.RemoveAll(full); err != nil {
		return fmt.Errorf("replacing %s: %w", full, err)
	}
	u.forget(rel)
	return nil
}

func (u *unpacker) entry(ctx context.Context, hdr *tar.Header, tr io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // global PAX defaults; archive/tar already applies them
	}
	rel, full, err := u.resolve(hdr.Name, true)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	parent, base := path.Split(rel)

	if base == OpaqueMarker {
		// resolve has checked (or created) the directory: it is the
		// marker's parent.
		dirFull := filepath.Join(u.root, parent)
		if err := unix.Lsetxattr(dirFull, opaqueXattr(), []byte("y"), 0); err != nil {
			return fmt.Errorf("marking %s opaque: %w", dirFull, err)
		}
		return nil
	}
	if name, ok := strings.CutPrefix(base, WhiteoutPrefix); ok {
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("unpacking %s: whiteout of an invalid name", hdr.Name)
		}
		target := path.Join(parent, name)
		targetFull := filepath.Join(u.root, target)
		if err := u.remove(target, targetFull); err != nil {
			return err
		}
		if err := unix.Mknod(targetFull, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("creating whiteout %s: %w", targetFull, err)
		}
		return setTimes(targetFull, hdr.ModTime, hdr.ModTime)
	}

	if hdr.Typeflag == tar.TypeLink {
		return u.hardlink(hdr, rel, full)
	}

	isLink := hdr.Typeflag == tar.TypeSymlink
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.mkdir(rel, full); err != nil {
			return err
		}
	case tar.TypeReg:
		return u.writeFile(ctx, rel, full, hdr, tr)
	case tar.TypeSymlink:
		if err := u.create(rel, full, func() error { return os.Symlink(hdr.Linkname, full) }); err != nil {
			return fmt.Errorf("creating symlink %s: %w", full, err)
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			typ = unix.S_IFCHR
		case tar.TypeBlock:
			typ = unix.S_IFBLK
		}
		if typ != unix.S_IFIFO && userns.Running() {
			// A user namespace may not create device nodes. As
			// containers/storage does, a rootless store goes without the
			// ones a base image carries (/dev of a sandbox is its own
			// anyway); the image keeps them, from the base's blob.
			if err := u.remove(rel, full); err != nil {
				return err
			}
			return nil
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := u.create(rel, full, func() error { return unix.Mknod(full, typ|0o600, dev) }); err != nil {
			return fmt.Errorf("creating device %s: %w", full, &os.PathError{Op: "mknod", Path: full, Err: err})
		}
	default:
		return fmt.Errorf("unpacking %s: unsupported tar entry type %q", hdr.Name, hdr.Typeflag)
	}

	// chown first: it clears setuid/setgid and file capabilities, so the
	// mode and the xattrs must come after it.
	if err := os.Lchown(full, hdr.Uid, hdr.Gid); err != nil {
		if errors.Is(err, unix.EINVAL) && userns.Running() {
			// The ID has no mapping in kiln's user namespace.
			return fmt.Errorf("setting owner of %s to %d:%d: %w (a rootless build maps only as many IDs as the user's ranges in /etc/subuid and /etc/subgid hold)", full, hdr.Uid, hdr.Gid, err)
		}
		return fmt.Errorf("setting owner of %s: %w", full, err)
	}
	if !isLink {
		if err := unix.Fchmodat(unix.AT_FDCWD, full, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("setting mode of %s: %w", full, &os.PathError{Op: "chmod", Path: full, Err: err})
		}
	}
	err = setXattrs(full, hdr, isLink, func(name string, v []byte) error { return unix.Lsetxattr(full, name, v, 0) })
	if err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		u.dirTimes[rel] = hdr.ModTime
		return nil
	}
	return setTimes(full, accessTime(hdr), hdr.ModTime)
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// create runs mk, which makes a non-directory at full; if something is in
// the way (a later tar entry replaces an earlier one), that is removed and
// mk runs again. Trying first saves an lstat per entry in the usual case.
func (u *unpacker) create(rel, full string, mk func() error) error {
	err := mk()
	if errors.Is(err, unix.EEXIST) {
		if err := u.remove(rel, full); err != nil {
			return err
		}
		err = mk()
	}
	return err
}

// mkdir creates the directory rel, keeping one that already exists (its
// attributes are then overwritten) and replacing anything else.
func (u *unpacker) mkdir(rel, full string) error {
	err := os.Mkdir(full, 0o700)
	if errors.Is(err, fs.ErrExist) {
		var st unix.Stat_t
		if unix.Lstat(full, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = nil
		} else if err = u.remove(rel, full); err == nil {
			err = os.Mkdir(full, 0o700)
		}
	}
	if err != nil {
		return fmt.Errorf("creating directory %s: %w", full, err)
	}
	u.dirs[rel] = struct{}{}
	return nil
}

// hardlink links rel to the entry's Linkname, which resolves under the root
// like any entry name. The inode's attributes are those of its first entry.
func (u *unpacker) hardlink(hdr *tar.Header, rel, full string) error {
	targetRel, targetFull, err := u.resolve(hdr.Linkname, false)
	if err != nil {
		return fmt.Errorf("hardlink %s: %w", hdr.Name, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(targetFull, &st); err != nil {
		return fmt.Errorf("hardlink %s to %s: %w", hdr.Name, hdr.Linkname, &os.PathError{Op: "lstat", Path: targetFull, Err: err})
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hardlink %s to %s: target is a directory", hdr.Name, hdr.Linkname)
	}
	if targetRel == rel {
		return nil
	}
	if err := u.remove(rel, full); err != nil {
		return err
	}
	// Flags 0: linkat does not follow a symlink target, it links the
	// symlink itself.
	if err := unix.Linkat(unix.AT_FDCWD, targetFull, unix.AT_FDCWD, full, 0); err != nil {
		return fmt.Errorf("hardlink %s to %s: %w", full, targetFull, err)
	}
	return nil
}

// writeFile creates a regular file and sets its attributes through the
// open descriptor, which for thousands of small files is cheaper than
// three more walks of the path.
func (u *unpacker) writeFile(ctx context.Context, rel, full string, hdr *tar.Header, r io.Reader) error {
	var fd int
	err := u.create(rel, full, func() (err error) {
		fd, err = unix.Open(full, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating %s: %w", full, &os.PathError{Op: "open", Path: full, Err: err})
	}
	err = func() error {
		defer unix.Close(fd)
		if _, err := copyBuffer(ctx, fdWriter(fd), r, -1, u.buf); err != nil {
			return fmt.Errorf("writing %s: %w", full, err)
		}
		// chown first: it clears setuid/setgid and file capabilities.
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("setting owner of %s: %w", full, err)
		}
		if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
			return fmt.Errorf("setting mode of %s: %w", full, err)
		}
		return setXattrs(full, hdr, false, func(name string, v []byte) error { return unix.Fsetxattr(fd, name, v, 0) })
	}()
	if err != nil {
		return err
	}
	return setTimes(full, accessTime(hdr), hdr.ModTime)
}

type fdWriter int

func (fd fdWriter) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := unix.Write(int(fd), p[written:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

func setXattrs(full string, hdr *tar.Header, isLink bool, set func(name string, v []byte) error) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok || !keepXattr(name) {
			continue
		}
		err := set(name, []byte(v))
		if err != nil && isLink && errors.Is(err, unix.EPERM) {
			continue // the kernel allows no user.* xattrs on symlinks
		}
		if err != nil {
			return fmt.Errorf("setting xattr %s on %s: %w", name, full, err)
		}
	}
	return nil
}

func setTimes(full string, atime, mtime time.Time) error {
	// Built by hand: UnixNano overflows outside 1678..2262, and tar
	// archives do carry such dates.
	ts := []unix.Timespec{
		{Sec: atime.Unix(), Nsec: int64(atime.Nanosecond())},
		{Sec: mtime.Unix(), Nsec: int64(mtime.Nanosecond())},
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", full, &os.PathError{Op: "utimensat", Path: full, Err: err})
	}
	return nil
}

// opaqueXattr is the xattr that marks an opaque directory for the
// overlay mounts of this process: user.overlay.opaque in a user
// namespace, where overlay is mounted with userxattr.
func opaqueXattr() string {
	if userns.Running() {
		return UserOpaqueXattr
	}
	return OpaqueXattr
}
