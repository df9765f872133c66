//go:build linux

// Package rooted is the one door into untrusted directory trees: a rootfs
// being built, a layer being applied, an export directory, a build context.
//
// Paths inside such a tree are resolved the way a process chrooted into it
// would see them (absolute symlink targets and ".." never leave the root),
// and every file is then reached by file descriptor, one component at a time
// with O_NOFOLLOW, from a handle of the root. Metadata (owner, mode, times,
// xattrs) is changed through the descriptor of the verified parent directory
// and the final name, never through a joined path string: a directory that
// became a symlink between a walk and a later pass makes the later call fail
// with ELOOP or ENOTDIR instead of following it out of the tree.
package rooted

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// MaxSymlinks bounds symlink resolution, like continuity's fs.RootPath that
// BuildKit uses for every in-root path.
const MaxSymlinks = 255

// ErrTooManyLinks is returned for a symlink loop or an over-long chain.
var ErrTooManyLinks = errors.New("too many levels of symbolic links")

// Root is an open directory that untrusted paths are resolved inside.
type Root struct {
	dir  *Dir
	path string
	// Layer marks a raw overlay layer directory: an overlay whiteout (a 0:0
	// character device) reads as absent while resolving.
	Layer bool
	// Hide, when set, is asked about every entry Lstat finds (and so every
	// component Resolve and ReadFile walk through) but the root itself; a
	// non-nil error, which should match fs.ErrNotExist, makes the entry
	// absent. A build context filtered by .dockerignore uses it, so that a
	// path through an excluded symlink does not exist, as in BuildKit's
	// transferred context.
	Hide func(p string, st *syscall.Stat_t) error
}

// Open opens dir as a root. The directory itself is trusted (kiln made it
// or the user named it); nothing below it is.
func Open(dir string) (*Root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dir, err)
	}
	f, err := openPath(abs)
	if err != nil {
		return nil, err
	}
	return &Root{dir: &Dir{f: f, rel: "/"}, path: abs}, nil
}

// Close releases the root's handle.
func (r *Root) Close() error { return r.dir.Close() }

// Path is the root's absolute path on the host, for messages and for
// handing the whole tree to the kernel (an overlay lowerdir, say). Never
// join untrusted names to it.
func (r *Root) Path() string { return r.path }

// Dir is the root directory's own handle; it stays owned by the root.
func (r *Root) Dir() *Dir { return r.dir }

// Clean turns an untrusted name into a clean rooted path ("/a/b"), as
// BuildKit contains "../x" and "/x": leading ".." components vanish.
func Clean(name string) string {
	return path.Clean("/" + filepath.ToSlash(name))
}

// Split splits a clean rooted path into its components ("/" has none).
func Split(p string) []string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// Resolve resolves p inside the root and returns the symlink-free rooted
// path it names and whether that exists. It follows BuildKit's
// fs.RootPath: p is cleaned lexically first (so "link/.." is "/"), an
// absolute link target restarts at the root, a relative one is joined to
// the directory holding the link, and ".." stops at the root. Components
// past the first missing one are taken literally, so a path yet to be
// created resolves too. The final component is followed only when
// followLast is set.
//
// The answer is a string and the tree may change after it is computed:
// open it with OpenDir/Parent, which refuse any symlink on the way, so a
// change turns into an error rather than an escape.
func (r *Root) Resolve(p string, followLast bool) (resolved string, exists bool, err error) {
	comps := Split(Clean(p))
	resolved = "/"
	links := 0
	for i := 0; i < len(comps); i++ {
		next := path.Join(resolved, comps[i])
		if i == len(comps)-1 && !followLast {
			_, err := r.Lstat(next)
			switch {
			case err == nil:
				return next, true, nil
			case isNotExist(err):
				return next, false, nil
			}
			return "", false, err
		}
		st, err := r.Lstat(next)
		if isNotExist(err) {
			return path.Join(append([]string{resolved}, comps[i:]...)...), false, nil
		}
		if err != nil {
			return "", false, err
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			resolved = next
			continue
		}
		if links++; links > MaxSymlinks {
			return "", false, &fs.PathError{Op: "resolve", Path: p, Err: ErrTooManyLinks}
		}
		target, err := r.Readlink(next)
		if err != nil {
			return "", false, err
		}
		np := path.Join(resolved, target)
		if path.IsAbs(target) {
			np = path.Clean(target)
		}
		// Start over with the link replaced: the target may cross links
		// itself, and the prefix in resolved is link-free.
		comps = append(Split(np), comps[i+1:]...)
		resolved = "/"
		i = -1
	}
	return resolved, true, nil
}

// Lstat reports the entry at the symlink-free rooted path p without
// following a final symlink. In a Layer root a whiteout reports
// fs.ErrNotExist.
func (r *Root) Lstat(p string) (*syscall.Stat_t, error) {
	d, name, err := r.Parent(p)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return r.dir.Stat()
	}
	defer d.Close()
	st, err := d.Lstat(name)
	if err == nil && r.Layer && IsWhiteout(st) {
		return nil, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
	}
	if err == nil && r.Hide != nil {
		if herr := r.Hide(Clean(p), st); herr != nil {
			return nil, herr
		}
	}
	return st, err
}

// Readlink reads the symlink at the symlink-free rooted path p.
func (r *Root) Readlink(p string) (string, error) {
	d, name, err := r.Parent(p)
	if err != nil {
		return "", err
	}
	if d == nil {
		return "", &fs.PathError{Op: "readlink", Path: p, Err: syscall.EINVAL}
	}
	defer d.Close()
	return d.Readlink(name)
}

// OpenDir opens the directory at the symlink-free rooted path p. Every
// component must be a real directory: a symlink anywhere on the way is an
// error (ELOOP or ENOTDIR), never followed.
func (r *Root) OpenDir(p string) (*Dir, error) {
	cur := r.dir
	for _, c := range Split(p) {
		next, err := cur.OpenDir(c)
		if cur != r.dir {
			cur.Close()
		}
		if err != nil {
			return nil, err
		}
		cur = next
	}
	if cur == r.dir {
		return r.dir.dup()
	}
	return cur, nil
}

// Parent opens the directory holding the symlink-free rooted path p and
// returns it with p's final name, for *at calls that must not follow that
// name. For the root itself it returns a nil Dir and "".
func (r *Root) Parent(p string) (*Dir, string, error) {
	p = Clean(p)
	if p == "/" {
		return nil, "", nil
	}
	d, err := r.OpenDir(path.Dir(p))
	if err != nil {
		return nil, "", err
	}
	return d, path.Base(p), nil
}

// MkdirAll makes every missing directory of the symlink-free rooted path p
// with mode perm (then made exact, whatever the umask), calling made for
// each directory it created, and returns a handle of the last. An existing
// non-directory or symlink on the way is an error.
func (r *Root) MkdirAll(p string, perm fs.FileMode, made func(d *Dir, name string) error) (*Dir, error) {
	cur, err := r.dir.dup()
	if err != nil {
		return nil, err
	}
	for _, c := range Split(p) {
		next, err := cur.OpenDir(c)
		if isNotExist(err) {
			if err = cur.Mkdir(c, perm); err == nil || errors.Is(err, fs.ErrExist) {
				if err == nil && made != nil {
					err = made(cur, c)
				}
				if err == nil {
					next, err = cur.OpenDir(c)
				}
			}
		}
		cur.Close()
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

// ReadFile reads the regular file at rooted path p (symlinks resolved
// inside the root), at most limit bytes. Anything but a regular file — a
// FIFO planted at /etc/passwd, a device — is refused without blocking.
func (r *Root) ReadFile(p string, limit int64) ([]byte, error) {
	res, exists, err := r.Resolve(p, true)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	d, name, err := r.Parent(res)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, &fs.PathError{Op: "read", Path: p, Err: syscall.EISDIR}
	}
	defer d.Close()
	return d.ReadFile(name, limit)
}

// Rel is the rooted path of host path p under the root, or an error when
// p is not below it. For turning a walk's host paths into names.
func (r *Root) Rel(p string) (string, error) {
	rel, err := filepath.Rel(r.path, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not inside %s", p, r.path)
	}
	return Clean(rel), nil
}

// IsWhiteout reports an overlay whiteout: a character device 0:0.
func IsWhiteout(st *syscall.Stat_t) bool {
	return st.Mode&syscall.S_IFMT == syscall.S_IFCHR && st.Rdev == 0
}

// isNotExist reports the errors that mean "no such entry" on a walk: a
// missing component, or a non-directory used as one.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
