package copier

import (
	"errors"
	"io/fs"
	"strings"
	"syscall"

	"github.com/kiln-build/kiln/rooted"
)

// errTooManyLinks is the error a symlink loop resolves to.
var errTooManyLinks = rooted.ErrTooManyLinks

// tree is a directory tree addressed by in-root paths ("/a/b"), opened
// through rooted. The source side filters it through .dockerignore; the
// destination side is the plain directory.
type tree interface {
	// root is the tree's rooted handle; the caller must not close it.
	root() (*rooted.Root, func(), error)
	// host turns an in-root path into a path on this machine, for
	// messages and for the ADD archive extraction that still takes paths
	// (replaced by the layer package's applier).
	host(rel string) string
}

// dirTree is a plain directory used as a root by path: only the ADD archive
// extraction (archive_linux.go) still uses it; the copier proper holds an
// open *rooted.Root.
type dirTree string

func (d dirTree) root() (*rooted.Root, func(), error) {
	r, err := rooted.Open(string(d))
	if err != nil {
		return nil, nil, err
	}
	return r, func() { r.Close() }, nil
}

func (d dirTree) host(rel string) string {
	rel = rooted.Clean(rel)
	if rel == "/" {
		return string(d)
	}
	if d == "/" {
		return rel
	}
	return string(d) + rel
}

// resolveIn resolves p inside t with rooted's BuildKit semantics (see
// rooted.Root.Resolve) and returns the symlink-free in-root path.
func resolveIn(t tree, p string, followLast bool) (string, error) {
	r, done, err := t.root()
	if err != nil {
		return "", err
	}
	defer done()
	res, _, err := r.Resolve(p, followLast)
	return res, err
}

// cleanRooted cleans p as if it were rooted at "/", which is how BuildKit
// contains "../x" and "/x" in the root: leading ".." components vanish.
func cleanRooted(p string) string { return rooted.Clean(p) }

// splitRooted splits a clean rooted path into its components.
func splitRooted(p string) []string { return rooted.Split(p) }

// isNotExist reports the errors that mean "no such entry" when walking a
// path: a missing component, or a regular file used as a directory.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// hasWildcard is fsutil's containsWildcards: "*", "?" or "[" not escaped
// by a backslash.
func hasWildcard(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '*', '?', '[':
			return true
		}
	}
	return false
}

// cleanKeepSlash is BuildKit's cleanPath for a destination: rooted and
// clean, but a trailing "/" or "/." survives because it makes the
// destination a directory.
func cleanKeepSlash(p string) string {
	c := cleanRooted(p)
	switch {
	case strings.HasSuffix(p, "/."):
		if c != "/" {
			c += "/"
		}
		c += "."
	case strings.HasSuffix(p, "/") && c != "/":
		c += "/"
	}
	return c
}
