package copier

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"github.com/moby/patternmatcher"

	"github.com/kiln-build/kiln/rooted"
)

// srcTree is the source root as BuildKit's copy sees it. For the build
// context that is the context after .dockerignore: BuildKit transfers only
// the paths that survive the patterns (fsutil's filter walk) and the copy
// runs on that transfer, so an excluded path is simply absent — even when
// reached through a symlink or a wildcard. For every source, overlay
// whiteouts and whiteout marker files are absent too: they are layer
// bookkeeping, never content (DESIGN item 8).
type srcTree struct {
	dir string                         // the host path, for messages and the archive extraction
	r   *rooted.Root                   // every lookup goes through it, filtered by hide
	pm  *patternmatcher.PatternMatcher // nil without .dockerignore patterns
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
	// sel is the verdict of the COPY's own --exclude/--parents selection.
	sel selState
}

// excludedError says why a path is absent; it matches fs.ErrNotExist.
type excludedError struct{ pattern string }

func (e *excludedError) Error() string {
	return fmt.Sprintf("excluded by .dockerignore pattern %q", e.pattern)
}

func (e *excludedError) Is(target error) bool { return target == fs.ErrNotExist }

// newSrcTree opens root as a source. The caller closes it.
func newSrcTree(root string, excludes []string) (*srcTree, error) {
	r, err := rooted.Open(root)
	if err != nil {
		return nil, err
	}
	t := &srcTree{dir: r.Path(), r: r}
	r.Hide = t.hide
	if len(excludes) == 0 {
		return t, nil
	}
	pm, err := patternmatcher.New(normalizePatterns(excludes))
	if err != nil {
		r.Close()
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

// Close releases the tree's root.
func (t *srcTree) Close() error { return t.r.Close() }

// normalizePatterns applies what moby/patternmatcher/ignorefile does to
// each .dockerignore pattern, so patterns written "/foo" match "foo"; it is
// a no-op on patterns that already went through ignorefile.ReadAll. Not
// its comments: ReadAll drops a line that starts with "#" before it trims
// it, so a pattern it returns may start with "#" (from " #foo"), and is
// one.
func normalizePatterns(in []string) []string {
	out := make([]string, 0, len(in))
	for _, p := range in {
		p = strings.TrimSpace(p)
		if p == "" {
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

// lstat reports the entry at the symlink-free in-root path rel as the
// transferred context has it: absent when hidden (see hide).
func (t *srcTree) lstat(rel string) (fs.FileInfo, error) {
	st, err := t.r.Lstat(rel)
	if err != nil {
		return nil, err
	}
	return rooted.FileInfo(rel, st), nil
}

// lstatAt is lstat for the entry name of the open directory d (whose
// in-root path is d.Name()), without walking from the root again.
func (t *srcTree) lstatAt(d *rooted.Dir, name string) (fs.FileInfo, error) {
	st, err := d.Lstat(name)
	if err != nil {
		return nil, err
	}
	rel := path.Join(d.Name(), name)
	if err := t.hide(rel, st); err != nil {
		return nil, err
	}
	return rooted.FileInfo(rel, st), nil
}

// hide makes whiteouts, whiteout marker files and what .dockerignore
// excludes absent from the tree; rooted asks it about every entry a lookup
// walks through.
func (t *srcTree) hide(rel string, st *syscall.Stat_t) error {
	if rel == "/" {
		return nil
	}
	if hasWhiteoutComponent(rel) || rooted.IsWhiteout(st) {
		return &fs.PathError{Op: "lstat", Path: rel, Err: fs.ErrNotExist}
	}
	if t.pm == nil {
		return nil
	}
	isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	parent, err := t.dirState(path.Dir(rel))
	if err != nil {
		return err
	}
	ms, err := t.child(parent, rel, isDir)
	if err != nil {
		return err
	}
	ok, err := t.present(rel, isDir, ms)
	if err != nil {
		return err
	}
	if !ok {
		return &excludedError{pattern: t.excludedBy(rel)}
	}
	return nil
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
func (t *srcTree) present(rel string, isDir bool, st matchState) (bool, error) {
	if !st.excluded {
		return true, nil
	}
	if !isDir || st.pruned {
		return false, nil
	}
	if k, ok := t.kept[rel]; ok {
		return k, nil
	}
	d, err := t.r.OpenDir(rel)
	if err != nil {
		return false, err
	}
	defer d.Close()
	names, err := d.Names()
	if err != nil {
		return false, err
	}
	k := false
	for _, name := range names {
		if isWhiteoutName(name) {
			continue
		}
		cst, err := d.Lstat(name)
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return false, err
		}
		if rooted.IsWhiteout(cst) {
			continue
		}
		crel := path.Join(rel, name)
		cdir := cst.Mode&syscall.S_IFMT == syscall.S_IFDIR
		cms, err := t.child(st, crel, cdir)
		if err != nil {
			return false, err
		}
		if k, err = t.present(crel, cdir, cms); err != nil {
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
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && rooted.IsWhiteout(st)
}
