package copier

import (
	"fmt"
	"strings"

	"github.com/moby/patternmatcher"
)

// Selection is what the flags of one COPY or ADD select below each source
// it copies, besides .dockerignore: BuildKit's FileOp copy IncludePatterns
// (COPY --parents) and ExcludePatterns (COPY/ADD --exclude), matched by
// fsutil's copy against paths relative to the copied source — the source
// itself (a file, or the directory whose contents are copied) is never
// matched.
type Selection struct {
	// Excludes are --exclude patterns, .dockerignore syntax ("!" exceptions
	// included); they apply to the build context and to --from sources
	// alike.
	Excludes []string `json:"excludes,omitempty"`
	// Parents is COPY --parents: each source is "BASE/./PATTERN" (BASE is
	// "/" without a pivot), BASE is copied with only what PATTERN matches
	// below it, with the directories leading there.
	Parents bool `json:"parents,omitempty"`
}

func (s Selection) empty() bool { return len(s.Excludes) == 0 && !s.Parents }

// selection is a Selection compiled for one source.
type selection struct {
	include *patternmatcher.PatternMatcher // --parents: the part after the pivot
	exclude *patternmatcher.PatternMatcher // --exclude
	// literal are the include pattern's leading components without a
	// wildcard: only paths along them can match, so the walk skips the
	// rest of the tree (the copy would only enter it to find nothing).
	literal []string
}

// selState is the verdict of a selection for one entry.
type selState struct {
	inc, exc patternmatcher.MatchInfo
	// lazy: the entry is a directory not selected itself, copied only as
	// the parent of something selected below it (fsutil's delayed
	// createParentDirs).
	lazy bool
}

// SplitParents splits a COPY --parents source at its pivot: what is
// before the first "/./" is the directory copied from, what follows is the
// path (pattern) kept below it, relative; without a pivot the base is the
// root. Both halves are cleaned and rooted in the source tree.
func SplitParents(src string) (base, pattern string) {
	b, p, ok := strings.Cut(src, "/./")
	if !ok {
		b, p = "/", src
	}
	return cleanRooted(b), strings.TrimPrefix(cleanRooted(p), "/")
}

// compile builds the selection of one source; pattern is the --parents
// pattern ("" without --parents).
func (s Selection) compile(pattern string) (*selection, error) {
	if s.empty() {
		return nil, nil
	}
	sel := &selection{}
	if s.Parents && pattern != "" {
		pm, err := patternmatcher.New([]string{pattern})
		if err != nil {
			return nil, fmt.Errorf("COPY --parents path %q: %w; fix the path (wildcards *, ?, [a-z] and ** are allowed)", pattern, err)
		}
		sel.include = pm
		for _, c := range strings.Split(pattern, "/") {
			if hasWildcard(c) || strings.Contains(c, `\`) {
				break
			}
			sel.literal = append(sel.literal, c)
		}
	}
	if len(s.Excludes) > 0 {
		pm, err := patternmatcher.New(normalizePatterns(s.Excludes))
		if err != nil {
			return nil, fmt.Errorf("--exclude patterns %q: %w; fix the pattern (.dockerignore syntax: *, ?, [a-z], ** and ! exceptions)", s.Excludes, err)
		}
		sel.exclude = pm
	}
	if sel.include == nil && sel.exclude == nil {
		return nil, nil
	}
	return sel, nil
}

// child is fsutil copy's verdict for an entry below the copied source, rel
// being its path relative to that source: skip means it is neither copied
// nor walked into; a lazy directory is walked, and made only when
// something inside it is copied.
func (s *selection) child(parent selState, rel string, isDir bool) (st selState, skip bool, err error) {
	include, excluded := true, false
	if s.include != nil && !alongLiteral(rel, s.literal) {
		return st, true, nil
	}
	if s.include != nil {
		m, info, err := s.include.MatchesUsingParentResults(rel, parent.inc)
		if err != nil {
			return st, false, fmt.Errorf("matching --parents path against %q: %w", rel, err)
		}
		include, st.inc = m, info
	}
	if s.exclude != nil {
		m, info, err := s.exclude.MatchesUsingParentResults(rel, parent.exc)
		if err != nil {
			return st, false, fmt.Errorf("matching --exclude patterns against %q: %w", rel, err)
		}
		st.exc = info
		if m {
			include, excluded = false, true
		}
	}
	switch {
	case include:
		return st, false, nil
	case !isDir:
		return st, true, nil
	case excluded && !s.exclude.Exclusions():
		// nothing inside can come back: fsutil does not read it
		return st, true, nil
	}
	st.lazy = true
	return st, false, nil
}

// alongLiteral reports whether rel lies on the literal prefix (one is a
// prefix of the other, by components).
func alongLiteral(rel string, literal []string) bool {
	for i, c := range strings.Split(rel, "/") {
		if i >= len(literal) {
			return true
		}
		if c != literal[i] {
			return false
		}
	}
	return true
}
