package copier

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"syscall"

	"golang.org/x/sys/unix"
)

// fileID identifies an inode, to keep hardlinks among copied files.
type fileID struct{ dev, ino uint64 }

// copier copies the matches of one source argument.
type copier struct {
	src       *srcTree
	dst       dirTree
	chown     *owner     // --chown; nil keeps the source owner (see owner)
	mode      *chmodSpec // --chmod; nil keeps the source mode
	fromStage bool
	unpack    bool // ADD: extract local archives
	// links maps a multiply-linked source inode to the destination path of
	// its first copy, for the current match.
	links map[fileID]string
	// pending are excluded directories entered because an exception may
	// keep something inside; they are created when that happens.
	pending []*pendingDir
}

type pendingDir struct {
	srcHost string
	fi      fs.FileInfo
	dstHost string
	made    bool
	created bool
}

// errReplaceDir is fsutil's refusal to put a file where a directory is.
var errReplaceDir = errors.New("cannot replace a directory with a file")

// errNotDir is fsutil's refusal to merge a directory onto a non-directory.
var errNotDir = errors.New("cannot copy a directory onto a non-directory")

// topState is the .dockerignore verdict of a copied source itself.
func (c *copier) topState(srcRel string, fi fs.FileInfo) (matchState, error) {
	if c.src.pm == nil || srcRel == "/" {
		return matchState{}, nil
	}
	parent, err := c.src.dirState(path.Dir(srcRel))
	if err != nil {
		return matchState{}, err
	}
	return c.src.child(parent, srcRel, fi.IsDir())
}

// copyEntry copies one source entry to dstRel. top is the source named in
// the Dockerfile (after wildcards): when it is a directory, its contents
// are copied and dstRel itself keeps its metadata but for timestamps.
func (c *copier) copyEntry(srcRel string, fi fs.FileInfo, st matchState, dstRel string, top bool) error {
	return c.copyHost(srcRel, c.src.host(srcRel), fi, st, c.dst.host(dstRel), top)
}

func (c *copier) copyHost(srcRel, srcHost string, fi fs.FileInfo, st matchState, dstHost string, top bool) error {
	if fi.IsDir() {
		return c.copyDir(srcRel, srcHost, fi, st, dstHost, top)
	}
	if err := c.makePending(); err != nil {
		return err
	}
	if dfi, err := os.Lstat(dstHost); err == nil {
		if dfi.IsDir() {
			return &fs.PathError{Op: "copy", Path: dstHost, Err: errReplaceDir}
		}
		if err := os.Remove(dstHost); err != nil {
			return err
		}
	} else if !isNotExist(err) {
		return err
	}

	sys := fi.Sys().(*syscall.Stat_t)
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		if sys.Nlink > 1 {
			id := fileID{dev: sys.Dev, ino: sys.Ino}
			if first, ok := c.links[id]; ok {
				if err := os.Link(first, dstHost); err != nil {
					return err
				}
				break
			}
			c.links[id] = dstHost
		}
		if err := copyFileData(srcHost, dstHost); err != nil {
			return err
		}
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(srcHost)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dstHost); err != nil {
			return err
		}
	default:
		m := sys.Mode
		if m&unix.S_IFMT == unix.S_IFSOCK {
			// A socket cannot be recreated; fsutil leaves an empty file.
			m &^= unix.S_IFMT
		}
		if err := unix.Mknod(dstHost, m, int(sys.Rdev)); err != nil {
			return &fs.PathError{Op: "mknod", Path: dstHost, Err: err}
		}
	}
	return c.applyMeta(srcHost, fi, dstHost)
}

// copyDir copies a directory and what it holds. Like fsutil, an existing
// directory below the top is merged and takes the source's metadata; the top
// (dest itself) keeps its mode and owner and only takes the timestamps.
func (c *copier) copyDir(srcRel, srcHost string, fi fs.FileInfo, st matchState, dstHost string, top bool) error {
	// An excluded directory below the top is in BuildKit's context only as
	// the parent of something an exception keeps: create it lazily.
	lazy := !top && st.excluded
	var pd *pendingDir
	created := false
	if lazy {
		pd = &pendingDir{srcHost: srcHost, fi: fi, dstHost: dstHost}
		c.pending = append(c.pending, pd)
	} else {
		if err := c.makePending(); err != nil {
			return err
		}
		var err error
		if created, err = makeDir(dstHost); err != nil {
			return err
		}
	}

	entries, err := os.ReadDir(srcHost)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if isWhiteoutName(name) {
			continue
		}
		csrc := srcHost + "/" + name
		cfi, err := os.Lstat(csrc)
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return err
		}
		if isWhiteoutDevice(cfi) {
			continue
		}
		crel := path.Join(srcRel, name)
		var cst matchState
		if c.src.pm != nil {
			if cst, err = c.src.child(st, crel, cfi.IsDir()); err != nil {
				return err
			}
			if cst.excluded && (!cfi.IsDir() || cst.pruned) {
				continue
			}
		}
		if err := c.copyHost(crel, csrc, cfi, cst, dstHost+"/"+name, false); err != nil {
			return err
		}
	}

	if lazy {
		c.pending = c.pending[:len(c.pending)-1]
		if !pd.made {
			return nil
		}
		created = pd.created
	}
	if created || !top {
		return c.applyMeta(srcHost, fi, dstHost)
	}
	return setTimes(dstHost, fi)
}

// makePending creates the excluded directories entered so far, now that
// something inside them is copied.
func (c *copier) makePending() error {
	for _, pd := range c.pending {
		if pd.made {
			continue
		}
		created, err := makeDir(pd.dstHost)
		if err != nil {
			return err
		}
		pd.made, pd.created = true, created
	}
	return nil
}

// makeDir creates a directory to copy into, or accepts an existing one.
// Its final mode, owner and times are set after its contents are copied.
func makeDir(dstHost string) (bool, error) {
	dfi, err := os.Lstat(dstHost)
	if err == nil {
		if !dfi.IsDir() {
			return false, &fs.PathError{Op: "copy", Path: dstHost, Err: errNotDir}
		}
		return false, nil
	}
	if !isNotExist(err) {
		return false, err
	}
	if err := os.Mkdir(dstHost, 0o700); err != nil {
		return false, err
	}
	return true, nil
}

// owner of a copied entry: --chown, else the source owner for COPY --from,
// else root — BuildKit's client resets uid/gid to 0 when it sends the
// build context (client/solve.go prepareSyncedFiles), and the copy keeps
// what it receives.
func (c *copier) ownerOf(sys *syscall.Stat_t) (int, int) {
	switch {
	case c.chown != nil:
		return c.chown.uid, c.chown.gid
	case c.fromStage:
		return int(sys.Uid), int(sys.Gid)
	}
	return 0, 0
}

// applyMeta is fsutil's copyFileInfo then copyXAttrs: owner first (chown
// clears setuid/setgid and file capabilities), then mode, timestamps, and
// extended attributes last.
func (c *copier) applyMeta(srcHost string, fi fs.FileInfo, dstHost string) error {
	sys := fi.Sys().(*syscall.Stat_t)
	uid, gid := c.ownerOf(sys)
	if err := os.Lchown(dstHost, uid, gid); err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		m := toBits(fi.Mode())
		if c.mode != nil {
			m = c.mode.apply(fi.Mode())
		}
		if err := unix.Chmod(dstHost, m); err != nil {
			return &fs.PathError{Op: "chmod", Path: dstHost, Err: err}
		}
	}
	if err := setTimes(dstHost, fi); err != nil {
		return err
	}
	return copyXattrs(srcHost, dstHost)
}

// setTimes gives dst the access and modification times of fi, to the
// nanosecond, without following a symlink.
func setTimes(dstHost string, fi fs.FileInfo) error {
	sys := fi.Sys().(*syscall.Stat_t)
	ts := []unix.Timespec{
		{Sec: sys.Atim.Sec, Nsec: sys.Atim.Nsec},
		{Sec: sys.Mtim.Sec, Nsec: sys.Mtim.Nsec},
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dstHost, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "utimes", Path: dstHost, Err: err}
	}
	return nil
}

// copyFileData copies a regular file's bytes into a new file. os.File's
// ReadFrom uses copy_file_range (a reflink or in-kernel copy), falling back
// to sendfile or a read/write loop.
func copyFileData(srcHost, dstHost string) error {
	in, err := os.OpenFile(srcHost, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	// O_EXCL|O_NOFOLLOW: the path was just cleared, so anything there now
	// appeared behind our back and must not be written through.
	out, err := os.OpenFile(dstHost, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := out.ReadFrom(in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", srcHost, err)
	}
	return out.Close()
}

// copyXattrs copies the extended attributes of src to dst, such as
// security.capability and user.*. overlayfs' own trusted.overlay.* are
// bookkeeping of the source mount, not content. Like BuildKit, an
// attribute the destination refuses (no support, not permitted) is
// skipped rather than failing the build.
func copyXattrs(srcHost, dstHost string) error {
	names, err := listXattrs(srcHost)
	if err != nil {
		if ignorableXattrErr(err) {
			return nil
		}
		return &fs.PathError{Op: "listxattr", Path: srcHost, Err: err}
	}
	for _, name := range names {
		if len(name) >= len("trusted.overlay.") && name[:len("trusted.overlay.")] == "trusted.overlay." {
			continue
		}
		val, err := getXattr(srcHost, name)
		if err != nil {
			if ignorableXattrErr(err) || errors.Is(err, unix.ENODATA) {
				continue
			}
			return &fs.PathError{Op: "getxattr " + name, Path: srcHost, Err: err}
		}
		if err := unix.Lsetxattr(dstHost, name, val, 0); err != nil {
			if ignorableXattrErr(err) {
				continue
			}
			return &fs.PathError{Op: "setxattr " + name, Path: dstHost, Err: err}
		}
	}
	return nil
}

func ignorableXattrErr(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

func listXattrs(p string) ([]string, error) {
	for {
		n, err := unix.Llistxattr(p, nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, err
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

func getXattr(p, name string) ([]byte, error) {
	for {
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
