package copier

import (
	"fmt"

	"github.com/kiln-build/kiln/rooted"
)

// direct writes what a copy puts in the directories it made into the
// overlay's upper directory itself, rather than through the overlay
// mount: overlayfs doubles the cost of creating a file (measured on ext4:
// 10,000 files in 0.42 s through the mount, 0.21 s in the upper directory),
// and a COPY of a source tree is mostly file creation.
//
// It is exact for those directories only. A directory that did not exist
// in the merged tree when the copy made it has nothing below it in the
// lower layers (or they are hidden by a whiteout, and the overlay made it
// opaque), so its contents in the upper directory are all of its contents,
// and writing them there is what the overlay would have done. Everything
// else — the existing directories a copy merges into, whose lower entries
// it may replace — still goes through the mount. Nothing is looked up
// through the mount below a directory before it is filled here, so the
// overlay caches no stale entry; the mount is gone before the upper
// directory becomes the layer.
type direct struct {
	upper *rooted.Root
	made  map[string]bool // in-root paths of the directories this copy made
}

// openDirect opens the upper directory at upper ("" is none: every write
// goes through the mount).
func openDirect(upper string) (*direct, error) {
	if upper == "" {
		return nil, nil
	}
	r, err := rooted.Open(upper)
	if err != nil {
		return nil, fmt.Errorf("opening the destination's upper directory: %w", err)
	}
	return &direct{upper: r, made: map[string]bool{}}, nil
}

func (u *direct) close() {
	if u != nil {
		u.upper.Close()
	}
}

// note records that the copy made the directory rel.
func (u *direct) note(rel string) {
	if u != nil {
		u.made[rel] = true
	}
}

// entered is called once the copy has made or opened self in parent:
// self is in the upper directory when parent is, or when the copy made it.
func (u *direct) entered(parent, self *lazyDir, created bool) {
	if u == nil {
		return
	}
	self.upper = parent.upper
	if created {
		u.note(self.d.Name())
	}
	u.adopt(self)
}

// adopt swaps l's handle through the mount for its twin in the upper
// directory when the copy made l. Should the twin not open, l stays on
// the mount, which is always right, only slower.
func (u *direct) adopt(l *lazyDir) {
	if u == nil || l.upper || !u.made[l.d.Name()] {
		return
	}
	t, err := u.upper.OpenDir(l.d.Name())
	if err != nil {
		return
	}
	l.d.Close()
	l.d, l.upper = t, true
}
