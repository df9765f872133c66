package copier

import (
	"errors"
	"io/fs"
	"syscall"

	"github.com/kiln-build/kiln/rooted"
)

// mkdirIn creates the in-root directory rel of r — already resolved, so no
// component is a symlink — and its missing parents, one component at a
// time by handle: a component that is (or became) a symlink is an error,
// never followed. Like fsutil's MkdirAll, each directory it creates gets
// perm whatever the umask and, when own is set, that owner; without one it
// belongs to this process (root in the sandbox). Existing directories are
// left alone. It returns a handle of rel, which the caller closes; made,
// when set, is told the in-root path of each directory it created.
func mkdirIn(r *rooted.Root, rel string, perm uint32, own *owner, made func(rel string)) (*rooted.Dir, error) {
	cur, err := r.OpenDir("/")
	if err != nil {
		return nil, err
	}
	for _, comp := range splitRooted(rel) {
		next, created, err := openOrMkdir(cur, comp, perm, own)
		cur.Close()
		if err != nil {
			return nil, err
		}
		if created && made != nil {
			made(next.Name())
		}
		cur = next
	}
	return cur, nil
}

// openOrMkdir opens the child directory name of d, creating it first when
// it is missing (created).
func openOrMkdir(d *rooted.Dir, name string, perm uint32, own *owner) (_ *rooted.Dir, created bool, _ error) {
	st, err := d.Lstat(name)
	switch {
	case err == nil && st.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		return nil, false, &fs.PathError{Op: "mkdir", Path: pathIn(d, name), Err: syscall.ENOTDIR}
	case err != nil && !isNotExist(err):
		return nil, false, err
	case err != nil:
		if err := d.Mkdir(name, fs.FileMode(perm&0o777)); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, false, err
		} else if err == nil {
			created = true
			if own != nil {
				if err := d.Lchown(name, own.uid, own.gid); err != nil {
					return nil, false, err
				}
			}
		}
	}
	h, err := d.OpenDir(name)
	return h, created, err
}

// pathIn is the in-root path of name in d, for messages.
func pathIn(d *rooted.Dir, name string) string {
	if name == "" {
		return d.Name()
	}
	if d.Name() == "/" {
		return "/" + name
	}
	return d.Name() + "/" + name
}
