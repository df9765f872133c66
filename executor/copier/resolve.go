package copier

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// maxSymlinks bounds symlink resolution like continuity's fs.RootPath, which
// BuildKit uses for every in-root path.
const maxSymlinks = 255

// errTooManyLinks mirrors the error continuity reports for symlink loops.
var errTooManyLinks = errors.New("too many links")

// tree is a directory tree addressed by in-root paths ("/a/b"). The source
// side filters it through .dockerignore; the destination side is the plain
// directory.
type tree interface {
	// host turns an in-root path into a path on this machine.
	host(rel string) string
	// lstat reports an entry without following a final symlink; an entry
	// the tree hides reports an error matching fs.ErrNotExist.
	lstat(rel string) (fs.FileInfo, error)
}

// dirTree is a plain directory used as a root.
type dirTree string

func (d dirTree) host(rel string) string { return hostPath(string(d), rel) }

func (d dirTree) lstat(rel string) (fs.FileInfo, error) { return os.Lstat(d.host(rel)) }

// hostPath joins an in-root path to its root.
func hostPath(root, rel string) string {
	if rel == "/" || rel == "" {
		return root
	}
	if root == "/" {
		return path.Clean("/" + rel)
	}
	return root + path.Clean("/"+rel)
}

// cleanRooted cleans p as if it were rooted at "/", which is how BuildKit
// contains "../x" and "/x" in the root: leading ".." components vanish.
func cleanRooted(p string) string {
	return path.Clean("/" + filepath.ToSlash(p))
}

// resolveIn is the one function that turns a path into an in-root path with
// its symlinks resolved inside the root, never outside it: an absolute link
// target is re-rooted at the root and ".." stops at the root. It follows
// BuildKit's fs.RootPath: p is cleaned lexically first (so "link/.." is
// "."), a relative link target is joined lexically to the resolved directory
// holding the link, and missing components are taken literally so that a
// path yet to be created resolves too. The final component is followed only
// when followLast is set.
func resolveIn(t tree, p string, followLast bool) (string, error) {
	comps := splitRooted(cleanRooted(p))
	resolved := "/"
	links := 0
	for i := 0; i < len(comps); i++ {
		next := path.Join(resolved, comps[i])
		if i == len(comps)-1 && !followLast {
			return next, nil
		}
		fi, err := t.lstat(next)
		if err != nil {
			if isNotExist(err) {
				resolved = next
				continue
			}
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		links++
		if links > maxSymlinks {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: errTooManyLinks}
		}
		target, err := os.Readlink(t.host(next))
		if err != nil {
			return "", err
		}
		var np string
		if path.IsAbs(target) {
			np = path.Clean(target)
		} else {
			np = path.Join(resolved, target)
		}
		// Start over from the root with the link replaced: the target may
		// itself cross links, and the prefix from resolved is link-free.
		comps = append(splitRooted(np), comps[i+1:]...)
		resolved = "/"
		i = -1
	}
	return resolved, nil
}

// splitRooted splits a clean rooted path into its components.
func splitRooted(p string) []string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

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
