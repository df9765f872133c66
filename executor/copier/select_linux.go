package copier

import (
	"io/fs"
	"runtime"
	"sort"
	"sync"
	"syscall"

	"github.com/kiln-build/kiln/rooted"
)

// Select calls fn for every entry that a COPY of sources would read from
// srcRoot, in a fixed order: each source as written (after its wildcards are
// expanded and a symlink naming it is followed) and, below a directory,
// everything .dockerignore keeps. rel is the in-root path of the entry and
// fi its lstat (the followed target's for a named source). It is what the
// build cache hashes, so that a change the copy cannot see invalidates
// nothing, and it is the order in which the copy reads (see Op.Verify). A
// missing source yields the *NotFoundError the copy would.
//
// The tree is walked by directory handle, as the copy walks it: fn gets
// the open parent directory and the entry's name in it, so a reader opens
// the entry with dir.OpenRegular(name) — no path is resolved again.
func Select(srcRoot string, sources, excludes []string, fn func(source, rel string, fi fs.FileInfo) error) error {
	return SelectAt(srcRoot, sources, excludes, func(source, rel string, fi fs.FileInfo, _ *rooted.Dir, _ string) error {
		return fn(source, rel, fi)
	})
}

// SelectAt is Select that also hands fn the entry's parent directory and
// name (a nil dir for the root itself), valid during the call only.
func SelectAt(srcRoot string, sources, excludes []string, fn func(source, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error) error {
	return SelectAtWith(srcRoot, sources, excludes, Selection{}, fn)
}

// SelectAtWith is SelectAt for a copy with --exclude or --parents (sel).
func SelectAtWith(srcRoot string, sources, excludes []string, sel Selection, fn func(source, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error) error {
	src, err := newSrcTree(srcRoot, excludes)
	if err != nil {
		return err
	}
	defer src.Close()
	c := &copier{src: src}
	for _, s := range sources {
		base, err := c.selectSource(sel, s)
		if err != nil {
			return err
		}
		matches, err := c.expand(base)
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := c.selectMatch(s, m, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *copier) selectMatch(source, m string, fn func(source, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error) error {
	srcRel, _, err := c.src.r.Resolve(m, true)
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
	c.topRel = srcRel
	if srcRel == "/" {
		if err := fn(source, srcRel, fi, nil, ""); err != nil {
			return err
		}
		return c.selectDir(source, c.src.r.Dir(), st, fn)
	}
	parent, name, err := c.src.r.Parent(srcRel)
	if err != nil {
		return c.notFound(m, err)
	}
	defer parent.Close()
	if err := fn(source, srcRel, fi, parent, name); err != nil {
		return err
	}
	if !fi.IsDir() {
		return nil
	}
	d, err := parent.OpenDir(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return c.selectDir(source, d, st, fn)
}

func (c *copier) selectDir(source string, d *rooted.Dir, st matchState, fn func(source, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error) error {
	names, err := d.Names()
	if err != nil {
		return err
	}
	sort.Strings(names)
	stats, errs := lstatAll(d, names)
	for i, name := range names {
		if isWhiteoutName(name) {
			continue
		}
		cst, err := stats[i], errs[i]
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return err
		}
		if rooted.IsWhiteout(cst) {
			continue
		}
		crel := pathIn(d, name)
		cfi := rooted.FileInfo(name, cst)
		var cms matchState
		if c.src.pm != nil {
			if cms, err = c.src.child(st, crel, cfi.IsDir()); err != nil {
				return err
			}
			if cms.excluded && (!cfi.IsDir() || cms.pruned) {
				continue
			}
			// An excluded directory is copied only as the parent of
			// something kept: hash it only then, like the copy.
			if cms.excluded {
				if kept, err := c.src.present(crel, cfi.IsDir(), cms); err != nil {
					return err
				} else if !kept {
					continue
				}
			}
		}
		if c.sel != nil {
			xs, skip, err := c.sel.child(st.sel, c.relToTop(crel), cfi.IsDir())
			if err != nil {
				return err
			}
			if skip {
				continue
			}
			cms.sel = xs
		}
		if cms.sel.lazy {
			// reported once something below it is, as the copy makes it
			c.selPending = append(c.selPending, &pendingSel{source: source, rel: crel, fi: cfi, dir: d, name: name})
		} else if err := c.flushSelPending(fn); err != nil {
			return err
		} else if err := fn(source, crel, cfi, d, name); err != nil {
			return err
		}
		if cfi.IsDir() {
			sub, err := d.OpenDir(name)
			if err != nil {
				return err
			}
			err = c.selectDir(source, sub, cms, fn)
			sub.Close()
			if err != nil {
				return err
			}
		}
		if cms.sel.lazy {
			c.selPending = c.selPending[:len(c.selPending)-1]
		}
	}
	return nil
}

// flushSelPending reports the lazy directories entered so far, outermost
// first, before something inside them.
func (c *copier) flushSelPending(fn func(source, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error) error {
	for _, p := range c.selPending {
		if p.done {
			continue
		}
		p.done = true
		if err := fn(p.source, p.rel, p.fi, p.dir, p.name); err != nil {
			return err
		}
	}
	return nil
}

// lstatAll lstats the names of d, a large directory's spread over the
// cores: a no-op rebuild's hash of the context is one lstat per entry,
// and they are most of its time.
func lstatAll(d *rooted.Dir, names []string) ([]*syscall.Stat_t, []error) {
	stats, errs := make([]*syscall.Stat_t, len(names)), make([]error, len(names))
	one := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if !isWhiteoutName(names[i]) {
				stats[i], errs[i] = d.Lstat(names[i])
			}
		}
	}
	const chunk = 64 // below this, a goroutine costs more than it saves
	n := min(runtime.GOMAXPROCS(0), len(names)/chunk)
	if n < 2 {
		one(0, len(names))
		return stats, errs
	}
	var wg sync.WaitGroup
	per := (len(names) + n - 1) / n
	for lo := per; lo < len(names); lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			one(lo, hi)
		}(lo, min(lo+per, len(names)))
	}
	one(0, min(per, len(names)))
	wg.Wait()
	return stats, errs
}
