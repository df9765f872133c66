package copier

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/moby/patternmatcher"
)

// srcTree is the source root as BuildKit's copy sees it. For the build
// context that is the context after .dockerignore: BuildKit transfers only
// the paths that survive the patterns (fsutil's filter walk) and the copy
// runs on that transfer, so an excluded path is simply absent — even when
// reached through a symlink or a wildcard. For every source, overlay
// whiteouts and whiteout marker files are absent too: they are layer
// bookkeeping, never content (DESIGN item 8).
type srcTree struct {
	root string
	pm   *patternmatcher.PatternMatcher // nil without .dockerignore patterns
	// prefixOnly is fsutil's onlyPrefixExcludeExceptions: every exception
	// ("!pattern") is a literal path, so an excluded directory that no
	// exception names a path inside can be skipped without reading it.
	prefixOnly bool
	dirs       map[string]matchState // memo for directories on looked-up paths
	kept       map[string]bool       // memo: excluded dir with a kept descendant
}

// matchState is the .dockerignore verdict for one path.
type matchState struct {
	info     patternmatcher.MatchInfo // for MatchesUsingParentResults on children
	excluded bool
	// pruned: an excluded directory that fsutil does not walk into, so
	// nothing below it is transferred.
	pruned bool
}

// excludedError says why a path is absent; it matches fs.ErrNotExist.
type excludedError struct{ pattern string }

func (e *excludedError) Error() string {
	return fmt.Sprintf("excluded by .dockerignore pattern %q", e.pattern)
}

func (e *excludedError) Is(target error) bool { return target == fs.ErrNotExist }

func newSrcTree(root string, excludes []string) (*srcTree, error) {
	t := &srcTree{root: root}
	if len(excludes) == 0 {
		return t, nil
	}
	pm, err := patternmatcher.New(normalizePatterns(excludes))
	if err != nil {
		return nil, fmt.Errorf("parsing .dockerignore patterns: %w", err)
	}
	t.pm = pm
	t.prefixOnly = true
	for _, p := range pm.Patterns() {
		if p.Exclusion() && strings.ContainsAny(withoutTrailingGlob(p), `*[]?^\`) {
			t.prefixOnly = false
			break
		}
	}
	t.dirs = map[string]matchState{"/": {}}
	t.kept = map[string]bool{}
	return t, nil
}

// normalizePatterns applies what moby/patternmatcher/ignorefile does to
// each .dockerignore line, so patterns written "/foo" match "foo"; it is a
// no-op on patterns that already went through ignorefile.ReadAll.
func normalizePatterns(in []string) []string {
	out := make([]string, 0, len(in))
	for _, p := range in {
		p = strings.TrimSpace(p)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		invert := p[0] == '!'
		if invert {
			p = strings.TrimSpace(p[1:])
		}
		if p != "" {
			p = path.Clean(p)
			if len(p) > 1 && p[0] == '/' {
				p = p[1:]
			}
		}
		if invert {
			p = "!" + p
		}
		out = append(out, p)
	}
	return out
}

// withoutTrailingGlob is fsutil's patternWithoutTrailingGlob.
func withoutTrailingGlob(p *patternmatcher.Pattern) string {
	s := strings.TrimSuffix(p.String(), "/**")
	return strings.TrimSuffix(s, "/*")
}

func (t *srcTree) host(rel string) string { return hostPath(t.root, rel) }

func (t *srcTree) lstat(rel string) (fs.FileInfo, error) {
	rel = path.Clean("/" + rel)
	if rel != "/" && hasWhiteoutComponent(rel) {
		return nil, &fs.PathError{Op: "lstat", Path: t.host(rel), Err: fs.ErrNotExist}
	}
	fi, err := os.Lstat(t.host(rel))
	if err != nil || rel == "/" {
		return fi, err
	}
	if isWhiteoutDevice(fi) {
		return nil, &fs.PathError{Op: "lstat", Path: t.host(rel), Err: fs.ErrNotExist}
	}
	if t.pm == nil {
		return fi, nil
	}
	parent, err := t.dirState(path.Dir(rel))
	if err != nil {
		return nil, err
	}
	st, err := t.child(parent, rel, fi.IsDir())
	if err != nil {
		return nil, err
	}
	ok, err := t.present(rel, fi, st)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &excludedError{pattern: t.excludedBy(rel)}
	}
	return fi, nil
}

// dirState is the verdict for a directory on a looked-up path, memoised
// because every lookup under it starts from it.
func (t *srcTree) dirState(rel string) (matchState, error) {
	if st, ok := t.dirs[rel]; ok {
		return st, nil
	}
	parent, err := t.dirState(path.Dir(rel))
	if err != nil {
		return matchState{}, err
	}
	st, err := t.child(parent, rel, true)
	if err != nil {
		return matchState{}, err
	}
	t.dirs[rel] = st
	return st, nil
}

// child computes the verdict for rel from its parent directory's, the way
// fsutil's filter walk does.
func (t *srcTree) child(parent matchState, rel string, isDir bool) (matchState, error) {
	if parent.pruned {
		return matchState{excluded: true, pruned: true}, nil
	}
	m, info, err := t.pm.MatchesUsingParentResults(strings.TrimPrefix(rel, "/"), parent.info)
	if err != nil {
		return matchState{}, fmt.Errorf("matching .dockerignore patterns against %q: %w", rel, err)
	}
	st := matchState{info: info, excluded: m}
	if m && isDir {
		st.pruned = !t.mayKeepInside(strings.TrimPrefix(rel, "/"))
	}
	return st, nil
}

// mayKeepInside reports whether an exception pattern may bring back a path
// inside the excluded directory dir; when not, fsutil skips the directory.
func (t *srcTree) mayKeepInside(dir string) bool {
	if !t.pm.Exclusions() {
		return false
	}
	if !t.prefixOnly {
		return true
	}
	for _, p := range t.pm.Patterns() {
		if p.Exclusion() && strings.HasPrefix(withoutTrailingGlob(p)+"/", dir+"/") {
			return true
		}
	}
	return false
}

// present reports whether rel is in the transferred context: kept by the
// patterns, or an excluded directory that still holds a kept path (fsutil
// sends such a directory as the parent of what it holds).
func (t *srcTree) present(rel string, fi fs.FileInfo, st matchState) (bool, error) {
	if !st.excluded {
		return true, nil
	}
	if !fi.IsDir() || st.pruned {
		return false, nil
	}
	if k, ok := t.kept[rel]; ok {
		return k, nil
	}
	entries, err := os.ReadDir(t.host(rel))
	if err != nil {
		return false, err
	}
	k := false
	for _, e := range entries {
		crel := path.Join(rel, e.Name())
		if isWhiteoutName(e.Name()) {
			continue
		}
		cfi, err := e.Info()
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return false, err
		}
		if isWhiteoutDevice(cfi) {
			continue
		}
		cst, err := t.child(st, crel, cfi.IsDir())
		if err != nil {
			return false, err
		}
		if k, err = t.present(crel, cfi, cst); err != nil {
			return false, err
		} else if k {
			break
		}
	}
	t.kept[rel] = k
	return k, nil
}

// excludedBy names the pattern responsible for excluding rel: the last
// non-exception pattern that matches rel or one of its parents.
func (t *srcTree) excludedBy(rel string) string {
	rel = strings.TrimPrefix(rel, "/")
	pats := t.pm.Patterns()
	for i := len(pats) - 1; i >= 0; i-- {
		if pats[i].Exclusion() {
			continue
		}
		one, err := patternmatcher.New([]string{pats[i].String()})
		if err != nil {
			continue
		}
		if ok, _ := one.MatchesOrParentMatches(rel); ok {
			return pats[i].String()
		}
	}
	return ""
}

// isWhiteoutName reports AUFS-style whiteout files (".wh.NAME") and the
// opaque marker (".wh..wh..opq"), which only mean something inside a layer.
func isWhiteoutName(name string) bool { return strings.HasPrefix(name, ".wh.") }

func hasWhiteoutComponent(rel string) bool {
	for _, c := range splitRooted(rel) {
		if isWhiteoutName(c) {
			return true
		}
	}
	return false
}

// isWhiteoutDevice reports an overlayfs whiteout: a 0:0 character device.
func isWhiteoutDevice(fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}
