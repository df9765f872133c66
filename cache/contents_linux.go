package cache

import (
	"fmt"
	"path"
	"slices"
	"syscall"

	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/rooted"
)

// listContents walks an unpacked layer's fs/ directory and writes its
// contents list: the lines listContentsWalk writes, in the same order,
// but with one fstatat per entry relative to its open directory instead
// of an lstat of a path resolved again from the root. A pulled layer's
// list is made after its unpack, before it is published: on the path of
// the step that waits for the layer (13,700 entries: 75 ms → ~30 ms).
func listContents(fsDir string) ([]byte, error) {
	root, err := rooted.Open(fsDir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", fsDir, err)
	}
	defer root.Close()
	var buf []byte
	var walk func(d *rooted.Dir, rel string) error
	walk = func(d *rooted.Dir, rel string) error {
		names, err := d.Names()
		if err != nil {
			return err
		}
		slices.Sort(names) // filepath.WalkDir's order
		for _, n := range names {
			st, err := d.Lstat(n)
			if err != nil {
				return err
			}
			e := layer.TreeEntry{Path: path.Join(rel, n), Mode: rooted.FileMode(st.Mode), UID: st.Uid, GID: st.Gid, Size: st.Size, Rdev: st.Rdev}
			if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
				if e.Link, err = d.Readlink(n); err != nil {
					return err
				}
			}
			buf = appendContentsLine(buf, e)
			if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				sub, err := d.OpenDir(n)
				if err != nil {
					return err
				}
				err = walk(sub, e.Path)
				sub.Close()
				if err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root.Dir(), ""); err != nil {
		return nil, fmt.Errorf("listing %s: %w", fsDir, err)
	}
	return buf, nil
}
