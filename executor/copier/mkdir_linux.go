package copier

import (
	"io/fs"
	"os"
	"path"
	"syscall"

	"golang.org/x/sys/unix"
)

// mkdirAll creates the in-root directory rel — already resolved by
// resolveIn, so no component is a symlink — and its missing parents. Like
// fsutil's MkdirAll, each directory it creates gets perm whatever the
// umask and, when own is set, that owner; without one it belongs to this
// process (root in the sandbox). Existing directories are left alone.
func mkdirAll(t dirTree, rel string, perm uint32, own *owner) error {
	cur := "/"
	for _, comp := range splitRooted(rel) {
		cur = path.Join(cur, comp)
		h := t.host(cur)
		fi, err := os.Stat(h)
		if err == nil {
			if !fi.IsDir() {
				return &fs.PathError{Op: "mkdir", Path: h, Err: syscall.ENOTDIR}
			}
			continue
		}
		if !isNotExist(err) {
			return err
		}
		if err := os.Mkdir(h, 0o700); err != nil {
			return err
		}
		if err := unix.Chmod(h, perm); err != nil {
			return &fs.PathError{Op: "chmod", Path: h, Err: err}
		}
		if own != nil {
			if err := os.Lchown(h, own.uid, own.gid); err != nil {
				return err
			}
		}
	}
	return nil
}
