package layer

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// maxDepth bounds how many directory levels one path may have. Each level
// holds a descriptor while a path is walked; Linux's PATH_MAX would allow
// 2048, real trees never come close.
const maxDepth = 512

// walker finds directories inside a root by descriptor, one component at
// a time, and keeps the chain of handles of the last directory it reached
// so that the next tar entry, which nearly always sits in the same
// directory or next to it, costs no lookup at all. The chain is always a
// real path from the root: names[i] is a directory inside names[i-1], and
// dirs[i] its handle, opened without following a symlink.
type walker struct {
	root  *rooted.Root
	names []string
	dirs  []*dirRef
	// rootRef stands for the root's handle, which the root owns.
	rootRef dirRef
}

func newWalker(root *rooted.Root) *walker {
	return &walker{root: root, rootRef: dirRef{d: root.Dir(), root: true}}
}

// close releases every cached handle.
func (w *walker) close() { w.truncate(0) }

// truncate forgets the cached handles below depth n (n directories below
// the root stay).
func (w *walker) truncate(n int) {
	if n >= len(w.dirs) {
		return
	}
	for _, d := range w.dirs[n:] {
		d.release()
	}
	clear(w.dirs[n:])
	w.names, w.dirs = w.names[:n], w.dirs[:n]
}

// at is the handle of the directory at depth n of the current chain (0 is
// the root).
func (w *walker) at(n int) *rooted.Dir { return w.ref(n).d }

// ref is the shared handle at depth n, for a holder that may outlive the
// chain's hold (acquire it).
func (w *walker) ref(n int) *dirRef {
	if n == 0 {
		return &w.rootRef
	}
	return w.dirs[n-1]
}

// rel is the rooted path of the first n directories of the chain.
func (w *walker) rel(n int) string { return "/" + strings.Join(w.names[:n], "/") }

// lookupMode says how a walk treats what it meets.
type lookupMode struct {
	// follow resolves symlinks inside the root, as BuildKit's fs.RootPath
	// does; otherwise a symlink is an *EscapeError.
	follow bool
	// create makes missing directories (mkdir, then made is called).
	create bool
	// literal (with follow and create): a missing directory is made only
	// where the name itself leads; one a symlink's target names is an
	// error, as go-archive, chrooted, fails to create through a dangling
	// symlink.
	literal bool
}

// errMissing reports a missing directory on a walk that creates none.
type errMissing struct{ path string }

func (e *errMissing) Error() string { return e.path + ": no such directory" }

// lookup walks the components of a clean rooted directory path and returns
// the depth of the chain that now ends at it. made is called for each
// directory the walk created, with its parent's handle and its name.
func (w *walker) lookup(comps []string, m lookupMode, made func(parent *rooted.Dir, name, rel string) error) (int, error) {
	todo := comps
	fromLink := 0 // how many leading todo components came from link targets
	depth, links := 0, 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		linked := fromLink > 0
		if linked {
			fromLink--
		}
		switch c {
		case "", ".":
			continue
		case "..":
			if depth > 0 {
				depth--
			}
			continue
		}
		if depth < len(w.names) && w.names[depth] == c {
			depth++
			continue
		}
		if depth >= maxDepth {
			return 0, fmt.Errorf("more than %d directory levels", maxDepth)
		}
		parent := w.at(depth)
		next, err := parent.OpenDir(c)
		if errors.Is(err, fs.ErrNotExist) {
			if !m.create || (m.literal && linked) {
				return 0, &errMissing{path: path.Join(append([]string{w.rel(depth), c}, todo...)...)}
			}
			if err = mkdir(parent, c, 0o755); err == nil && made != nil {
				err = made(parent, c, path.Join(w.rel(depth), c))
			}
			if err == nil {
				next, err = parent.OpenDir(c)
			}
		}
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
			st, lerr := parent.Lstat(c)
			if lerr != nil {
				return 0, lerr
			}
			if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
				return 0, fmt.Errorf("%s is not a directory", path.Join(w.rel(depth), c))
			}
			if !m.follow {
				return 0, &EscapeError{Name: path.Join(w.rel(depth), c), Reason: "a parent directory is a symlink"}
			}
			if links++; links > rooted.MaxSymlinks {
				return 0, &fs.PathError{Op: "resolve", Path: path.Join(w.rel(depth), c), Err: rooted.ErrTooManyLinks}
			}
			target, err := parent.Readlink(c)
			if err != nil {
				return 0, err
			}
			if path.IsAbs(target) {
				depth = 0
			}
			tc := strings.Split(target, "/")
			todo = append(tc, todo...)
			fromLink += len(tc)
			continue
		}
		if err != nil {
			return 0, err
		}
		w.truncate(depth)
		w.names = append(w.names, c)
		w.dirs = append(w.dirs, newDirRef(next))
		depth++
	}
	return depth, nil
}

// mkdir makes the directory name in d with exactly perm (a plain mkdirat
// for 0700, which no sane umask changes). Not rooted's Mkdir, which reads
// the umask by setting it to 0 and back: for that instant, files other
// goroutines create (a parallel pull) would get no umask.
func mkdir(d *rooted.Dir, name string, perm fs.FileMode) error {
	if err := unix.Mkdirat(d.Fd(), name, uint32(perm.Perm())); err != nil {
		return d.Err("mkdir", name, err)
	}
	if perm.Perm() == 0o700 {
		return nil
	}
	return d.Chmod(name, perm)
}
