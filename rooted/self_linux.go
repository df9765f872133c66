package rooted

import (
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// NewRoot makes the directory d a root of its own: paths resolved in it
// stay below d (an absolute symlink target restarts at d), as a chroot at d
// would see them. It is how an archive is extracted into a directory of a
// rootfs (ADD), whose own symlinks resolve inside that directory, as
// BuildKit's chrooted extraction does. The root holds its own duplicate of
// d's handle; messages keep naming paths under d's rooted path.
func NewRoot(d *Dir) (*Root, error) {
	dup, err := d.dup()
	if err != nil {
		return nil, err
	}
	host, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(dup.Fd()))
	if err != nil {
		host = d.rel // only for Path and Rel; the handle is what counts
	}
	return &Root{dir: dup, path: host}, nil
}

// selfPath names the directory itself through its descriptor, for the
// calls that have no form taking an O_PATH descriptor: the magic link
// leads to this very inode whatever has been renamed or replaced since.
func (d *Dir) selfPath() string { return "/proc/self/fd/" + strconv.Itoa(d.Fd()) }

// SetOwner sets the directory's own owner, through its handle.
func (d *Dir) SetOwner(uid, gid int) error {
	if err := unix.Fchownat(d.Fd(), "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return d.err("chown", "", err)
	}
	return nil
}

// SetMode sets the directory's own mode, setuid, setgid and sticky bits
// included, through its handle.
func (d *Dir) SetMode(mode fs.FileMode) error {
	if err := unix.Chmod(d.selfPath(), unixMode(mode)); err != nil {
		return d.err("chmod", "", err)
	}
	return nil
}

// SetTimes sets the directory's own access and modification times,
// through its handle. Any time.Time is accepted (no overflow outside
// 1678..2262, which tar archives do carry).
func (d *Dir) SetTimes(atime, mtime time.Time) error {
	ts := []unix.Timespec{Timespec(atime), Timespec(mtime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, d.selfPath(), ts, 0); err != nil {
		return d.err("utimes", "", err)
	}
	return nil
}

// SetXattr sets an extended attribute of the directory itself.
func (d *Dir) SetXattr(attr string, value []byte) error {
	if err := unix.Setxattr(d.selfPath(), attr, value, 0); err != nil {
		return d.err("setxattr "+attr, "", err)
	}
	return nil
}

// Utimes sets name's access and modification times without following a
// symlink, like Lutimes, for any time.Time (Lutimes goes through
// nanoseconds since 1970, which overflow outside 1678..2262).
func (d *Dir) Utimes(name string, atime, mtime time.Time) error {
	if err := d.checkName("utimes", name); err != nil {
		return err
	}
	ts := []unix.Timespec{Timespec(atime), Timespec(mtime)}
	if err := unix.UtimesNanoAt(d.Fd(), name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.err("utimes", name, err)
	}
	return nil
}

// Timespec converts t without going through int64 nanoseconds.
func Timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// Create makes the regular file name, which must not exist, open for
// writing with mode perm (before the umask). O_EXCL with O_NOFOLLOW: a
// symlink or FIFO planted at name is never opened.
func (d *Dir) Create(name string, perm fs.FileMode) (int, error) {
	if err := d.checkName("create", name); err != nil {
		return -1, err
	}
	fd, err := unix.Openat(d.Fd(), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return -1, d.err("open", name, err)
	}
	return fd, nil
}

// Err wraps err as a *fs.PathError naming name in this directory (its
// rooted path), for callers making *at calls of their own through Fd.
func (d *Dir) Err(op, name string, err error) error {
	return d.err(op, name, err)
}
