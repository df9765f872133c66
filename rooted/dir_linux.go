package rooted

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is a handle of a directory inside a root. Every method takes one
// final name, never a path: the name is looked up in this directory
// without following a symlink.
type Dir struct {
	f   *os.File
	rel string // the rooted path it was opened as, for messages
}

// openPath opens a trusted host directory as an O_PATH handle.
func openPath(abs string) (*os.File, error) {
	fd, err := unix.Open(abs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: abs, Err: err}
	}
	return os.NewFile(uintptr(fd), abs), nil
}

// Fd is the directory's descriptor, for *at calls this package lacks. It
// is valid until Close.
func (d *Dir) Fd() int { return int(d.f.Fd()) }

// Name is the rooted path the directory was opened as.
func (d *Dir) Name() string { return d.rel }

// Close releases the handle.
func (d *Dir) Close() error {
	if d == nil {
		return nil
	}
	return d.f.Close()
}

func (d *Dir) dup() (*Dir, error) {
	fd, err := unix.FcntlInt(d.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating handle of %s: %w", d.rel, err)
	}
	return &Dir{f: os.NewFile(uintptr(fd), d.rel), rel: d.rel}, nil
}

func (d *Dir) err(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: path.Join(d.rel, name), Err: err}
}

// checkName refuses anything but one plain component: a name with a slash,
// "." or ".." would walk somewhere else than this directory's child.
func (d *Dir) checkName(op, name string) error {
	if name == "" || name == "." || name == ".." || containsSlash(name) {
		return d.err(op, name, syscall.EINVAL)
	}
	return nil
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

// Stat reports the directory itself.
func (d *Dir) Stat() (*syscall.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.Fd(), &st); err != nil {
		return nil, d.err("stat", "", err)
	}
	return toSyscall(&st), nil
}

// Lstat reports name without following it.
func (d *Dir) Lstat(name string) (*syscall.Stat_t, error) {
	if err := d.checkName("lstat", name); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(d.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, d.err("lstat", name, err)
	}
	return toSyscall(&st), nil
}

func toSyscall(st *unix.Stat_t) *syscall.Stat_t {
	return &syscall.Stat_t{
		Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atim: syscall.Timespec(st.Atim), Mtim: syscall.Timespec(st.Mtim), Ctim: syscall.Timespec(st.Ctim),
	}
}

// OpenDir opens the child directory name. A symlink is refused (ELOOP),
// a non-directory too (ENOTDIR).
func (d *Dir) OpenDir(name string) (*Dir, error) {
	if err := d.checkName("open", name); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(d.Fd(), name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, d.err("open", name, err)
	}
	rel := path.Join(d.rel, name)
	return &Dir{f: os.NewFile(uintptr(fd), rel), rel: rel}, nil
}

// Open opens name with flags (O_NOFOLLOW and O_CLOEXEC are always added):
// a final symlink is never followed. Opening for reading adds O_NONBLOCK
// so a FIFO cannot block; callers that want data check the type.
func (d *Dir) Open(name string, flags int, perm fs.FileMode) (*os.File, error) {
	if err := d.checkName("open", name); err != nil {
		return nil, err
	}
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if flags&(unix.O_WRONLY|unix.O_RDWR) == 0 {
		flags |= unix.O_NONBLOCK
	}
	fd, err := unix.Openat(d.Fd(), name, flags, uint32(perm.Perm()))
	if err != nil {
		return nil, d.err("open", name, err)
	}
	if flags&unix.O_NONBLOCK != 0 && flags&unix.O_PATH == 0 {
		// Reads of a regular file never block anyway; clearing the flag
		// keeps os.File on plain blocking reads.
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return nil, d.err("open", name, err)
		}
	}
	return os.NewFile(uintptr(fd), path.Join(d.rel, name)), nil
}

// OpenRegular opens name for reading and refuses anything but a regular
// file (a FIFO, a device, a directory) without blocking on it.
func (d *Dir) OpenRegular(name string) (*os.File, error) {
	// Look first: opening a device node runs its driver.
	st, err := d.Lstat(name)
	if err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, d.err("read", name, errors.New("not a regular file"))
	}
	f, err := d.Open(name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, d.err("stat", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, d.err("read", name, fmt.Errorf("not a regular file (%s)", fi.Mode().Type()))
	}
	return f, nil
}

// ReadFile reads the regular file name, at most limit bytes (an error
// past it).
func (d *Dir) ReadFile(name string, limit int64) ([]byte, error) {
	f, err := d.OpenRegular(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, d.err("read", name, err)
	}
	if int64(len(b)) > limit {
		return nil, d.err("read", name, fmt.Errorf("larger than %d bytes", limit))
	}
	return b, nil
}

// Mkdir makes the child directory name with exactly mode perm.
func (d *Dir) Mkdir(name string, perm fs.FileMode) error {
	if err := d.checkName("mkdir", name); err != nil {
		return err
	}
	if err := unix.Mkdirat(d.Fd(), name, uint32(perm.Perm())); err != nil {
		return d.err("mkdir", name, err)
	}
	// The umask (or a default ACL) may have taken bits away, and mkdir
	// never sets setuid/setgid/sticky: look rather than read the umask,
	// which only a racy set-and-restore tells.
	var st unix.Stat_t
	if err := unix.Fstatat(d.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.err("mkdir", name, err)
	}
	if st.Mode&0o7777 != unixMode(perm) {
		return d.Chmod(name, perm)
	}
	return nil
}

// Symlink makes name a symlink to target (stored as is: targets are
// resolved inside the root when they are followed).
func (d *Dir) Symlink(target, name string) error {
	if err := d.checkName("symlink", name); err != nil {
		return err
	}
	if err := unix.Symlinkat(target, d.Fd(), name); err != nil {
		return d.err("symlink", name, err)
	}
	return nil
}

// Link makes name a hardlink to oldName in oldDir, without following a
// symlink oldName.
func (d *Dir) Link(oldDir *Dir, oldName, name string) error {
	if err := d.checkName("link", name); err != nil {
		return err
	}
	if err := oldDir.checkName("link", oldName); err != nil {
		return err
	}
	if err := unix.Linkat(oldDir.Fd(), oldName, d.Fd(), name, 0); err != nil {
		return d.err("link", name, err)
	}
	return nil
}

// Mknod makes a device node, FIFO or socket name.
func (d *Dir) Mknod(name string, mode uint32, dev uint64) error {
	if err := d.checkName("mknod", name); err != nil {
		return err
	}
	if err := unix.Mknodat(d.Fd(), name, mode, int(dev)); err != nil {
		return d.err("mknod", name, err)
	}
	return nil
}

// Readlink reads the symlink name.
func (d *Dir) Readlink(name string) (string, error) {
	if err := d.checkName("readlink", name); err != nil {
		return "", err
	}
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(d.Fd(), name, buf)
		if err != nil {
			return "", d.err("readlink", name, err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > 1<<16 {
			return "", d.err("readlink", name, syscall.ENAMETOOLONG)
		}
	}
}

// Rename moves name to newName in newDir, replacing what is there (an
// empty directory included).
func (d *Dir) Rename(name string, newDir *Dir, newName string) error {
	if err := d.checkName("rename", name); err != nil {
		return err
	}
	if err := newDir.checkName("rename", newName); err != nil {
		return err
	}
	if err := unix.Renameat(d.Fd(), name, newDir.Fd(), newName); err != nil {
		return d.err("rename", name, err)
	}
	return nil
}

// Remove removes name, a file or an empty directory. A missing name is
// not an error.
func (d *Dir) Remove(name string) error {
	if err := d.checkName("remove", name); err != nil {
		return err
	}
	err := unix.Unlinkat(d.Fd(), name, 0)
	if err == unix.EISDIR || err == unix.EPERM {
		err = unix.Unlinkat(d.Fd(), name, unix.AT_REMOVEDIR)
	}
	if err != nil && err != unix.ENOENT {
		return d.err("remove", name, err)
	}
	return nil
}

// RemoveAll removes name and, for a directory, everything below it,
// descending by handle: a symlink inside is removed, never followed.
func (d *Dir) RemoveAll(name string) error {
	if err := d.checkName("remove", name); err != nil {
		return err
	}
	err := unix.Unlinkat(d.Fd(), name, 0)
	switch err {
	case nil, unix.ENOENT:
		return nil
	case unix.EISDIR, unix.EPERM:
	default:
		return d.err("remove", name, err)
	}
	sub, err := d.OpenDir(name)
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP) {
			// Not a directory after all (replaced meanwhile): unlink it.
			return d.Remove(name)
		}
		return err
	}
	names, err := sub.Names()
	if err == nil {
		for _, n := range names {
			if err = sub.RemoveAll(n); err != nil {
				break
			}
		}
	}
	sub.Close()
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(d.Fd(), name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return d.err("remove", name, err)
	}
	return nil
}

// Names lists the directory's entries (no "." or ".."), in directory order.
func (d *Dir) Names() ([]string, error) {
	fd, err := unix.Openat(d.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, d.err("open", "", err)
	}
	f := os.NewFile(uintptr(fd), d.rel)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, d.err("readdir", "", err)
	}
	return names, nil
}

// Lchown sets name's owner without following a symlink.
func (d *Dir) Lchown(name string, uid, gid int) error {
	if err := d.checkName("chown", name); err != nil {
		return err
	}
	if err := unix.Fchownat(d.Fd(), name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.err("chown", name, err)
	}
	return nil
}

// Chmod sets name's mode, setuid, setgid and sticky bits included. A
// symlink is left alone (Linux ignores a symlink's mode).
func (d *Dir) Chmod(name string, mode fs.FileMode) error {
	if err := d.checkName("chmod", name); err != nil {
		return err
	}
	m := unixMode(mode)
	err := unix.Fchmodat(d.Fd(), name, m, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		return nil
	}
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return d.err("chmod", name, err)
	}
	// No fchmodat2 (before Linux 6.6), or name is a symlink: pin the inode
	// with an O_PATH handle and change it through that handle.
	fd, err := unix.Openat(d.Fd(), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return d.err("chmod", name, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return d.err("chmod", name, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), m); err != nil {
		return d.err("chmod", name, err)
	}
	return nil
}

// Lutimes sets name's access and modification times without following a
// symlink.
func (d *Dir) Lutimes(name string, atime, mtime time.Time) error {
	if err := d.checkName("utimes", name); err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(d.Fd(), name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.err("utimes", name, err)
	}
	return nil
}

// procPath names name through this directory's descriptor, for the
// xattr calls that have no *at form; the l* variants do not follow name.
func (d *Dir) procPath(name string) string {
	return "/proc/self/fd/" + strconv.Itoa(d.Fd()) + "/" + name
}

// Lsetxattr sets an extended attribute of name without following it.
func (d *Dir) Lsetxattr(name, attr string, value []byte) error {
	if err := d.checkName("setxattr", name); err != nil {
		return err
	}
	if err := unix.Lsetxattr(d.procPath(name), attr, value, 0); err != nil {
		return d.err("setxattr "+attr, name, err)
	}
	return nil
}

// Lgetxattr reads an extended attribute of name without following it.
func (d *Dir) Lgetxattr(name, attr string) ([]byte, error) {
	if err := d.checkName("getxattr", name); err != nil {
		return nil, err
	}
	p := d.procPath(name)
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, attr, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, d.err("getxattr "+attr, name, err)
		}
		return buf[:n], nil
	}
}

// Llistxattr lists the extended attributes of name without following it.
func (d *Dir) Llistxattr(name string) ([]string, error) {
	if err := d.checkName("listxattr", name); err != nil {
		return nil, err
	}
	p := d.procPath(name)
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, d.err("listxattr", name, err)
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

// unixMode converts a Go file mode to st_mode permission bits.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}

// Dup returns a second handle of the same directory, closed separately.
func (d *Dir) Dup() (*Dir, error) { return d.dup() }
