package copier

import (
	"io/fs"
	"os"
	"path"
	"sort"
)

// Select calls fn for every entry that a COPY of sources would read from
// srcRoot, in a fixed order: each source as written (after its wildcards are
// expanded and a symlink naming it is followed) and, below a directory,
// everything .dockerignore keeps. rel is the in-root path of the entry and
// fi its lstat (the followed target's for a named source). It is what the
// build cache hashes, so that a change the copy cannot see invalidates
// nothing. A missing source yields the *NotFoundError the copy would.
func Select(srcRoot string, sources, excludes []string, fn func(source, rel string, fi fs.FileInfo) error) error {
	src, err := newSrcTree(srcRoot, excludes)
	if err != nil {
		return err
	}
	c := &copier{src: src}
	for _, s := range sources {
		matches, err := c.expand(s)
		if err != nil {
			return err
		}
		for _, m := range matches {
			srcRel, err := resolveIn(c.src, m, true)
			if err != nil {
				return c.notFound(m, err)
			}
			fi, err := c.src.lstat(srcRel)
			if err != nil {
				return c.notFound(m, err)
			}
			st, err := c.topState(srcRel, fi)
			if err != nil {
				return err
			}
			if err := fn(s, srcRel, fi); err != nil {
				return err
			}
			if fi.IsDir() {
				if err := c.selectDir(s, srcRel, st, fn); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *copier) selectDir(source, rel string, st matchState, fn func(source, rel string, fi fs.FileInfo) error) error {
	names, err := sortedNames(c.src.host(rel))
	if err != nil {
		return err
	}
	for _, name := range names {
		if isWhiteoutName(name) {
			continue
		}
		crel := path.Join(rel, name)
		cfi, err := os.Lstat(c.src.host(crel))
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return err
		}
		if isWhiteoutDevice(cfi) {
			continue
		}
		var cst matchState
		if c.src.pm != nil {
			if cst, err = c.src.child(st, crel, cfi.IsDir()); err != nil {
				return err
			}
			if cst.excluded && (!cfi.IsDir() || cst.pruned) {
				continue
			}
			// An excluded directory is copied only as the parent of
			// something kept: hash it only then, like the copy.
			if cst.excluded {
				if kept, err := c.src.present(crel, cfi, cst); err != nil {
					return err
				} else if !kept {
					continue
				}
			}
		}
		if err := fn(source, crel, cfi); err != nil {
			return err
		}
		if cfi.IsDir() {
			if err := c.selectDir(source, crel, cst, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// sortedNames lists a directory's entries in byte order, the order BuildKit
// walks them in.
func sortedNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}
