package serve

import (
	"archive/tar"
	"fmt"
	"path"
	"strings"
)

// contextChecker refuses a context archive entry that names a place
// outside the context: through "..", or below a symlink of the archive
// (where the symlink points is the host's business, not the archive's).
// The unpacking confines such entries anyway; refusing them tells the
// client its archive is not what docker build sends, as dockerd does.
type contextChecker struct {
	symlinks map[string]bool // cleaned names of the symlinks so far
}

func newContextChecker() *contextChecker {
	return &contextChecker{symlinks: map[string]bool{}}
}

func (c *contextChecker) check(hdr *tar.Header) error {
	name, ok := insideName(hdr.Name)
	if !ok {
		return fmt.Errorf("the archive entry %q leads outside the context: send the context as docker build does, with names relative to its root", hdr.Name)
	}
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		if c.symlinks[p] {
			return fmt.Errorf("the archive entry %q leads through the symlink %q: an archive may not write below a symlink of its own", hdr.Name, p)
		}
	}
	if hdr.Typeflag == tar.TypeLink {
		if _, ok := insideName(hdr.Linkname); !ok {
			return fmt.Errorf("the archive entry %q links to %q, outside the context", hdr.Name, hdr.Linkname)
		}
	}
	if name == "." {
		return nil
	}
	if hdr.Typeflag == tar.TypeSymlink {
		c.symlinks[name] = true
	} else {
		delete(c.symlinks, name)
	}
	return nil
}

// insideName cleans an entry name relative to the context's root ("/"
// leading or not); ok is false when ".." climbs above the root.
func insideName(name string) (string, bool) {
	depth := 0
	for _, part := range strings.Split(strings.TrimLeft(name, "/"), "/") {
		switch part {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return "", false
			}
		default:
			depth++
		}
	}
	return path.Clean(strings.TrimLeft(name, "/") + "/."), true
}
