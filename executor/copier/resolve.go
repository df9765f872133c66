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
