package planner

import (
	"strings"

	"github.com/moby/buildkit/util/system"

	"github.com/kiln-build/kiln/executor/copier"
)

// copySources normalizes the sources of a COPY or ADD as BuildKit does. A
// COPY --parents source keeps its pivot ("BASE/./PATH", BASE "/" without
// one): each half is normalized on its own, as dockerfile2llb splits the
// source before cleaning it, which would drop the "/./".
func copySources(srcs []string, parents bool) ([]string, error) {
	out := make([]string, 0, len(srcs))
	for _, src := range srcs {
		if !parents {
			p, err := system.NormalizePath("/", src, targetOS, false)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
			continue
		}
		base, pattern, ok := strings.Cut(src, "/./")
		if !ok {
			base, pattern = "/", src
		}
		b, err := system.NormalizePath("/", base, targetOS, false)
		if err != nil {
			return nil, err
		}
		p, err := system.NormalizePath("/", pattern, targetOS, false)
		if err != nil {
			return nil, err
		}
		out = append(out, strings.TrimSuffix(b, "/")+"/./"+strings.TrimPrefix(p, "/"))
	}
	return out, nil
}

// addSelection adds a COPY's --exclude patterns and --parents to its key,
// only when set: the keys of copies without them stay as they were.
func addSelection(k *stepKey, sel copier.Selection) {
	if len(sel.Excludes) > 0 {
		k.addList("exclude", sel.Excludes)
	}
	if sel.Parents {
		k.add("parents", "true")
	}
}

// chownByName reports whether a --chown value names a user or a group
// rather than numeric ids ("app", "1000:staff").
func chownByName(chown string) bool {
	if chown == "" {
		return false
	}
	for _, part := range strings.SplitN(chown, ":", 2) {
		if part != "" && strings.Trim(part, "0123456789") != "" {
			return true
		}
	}
	return false
}

// newLinkedKey starts the key of a COPY --link: its layer is made on an
// empty tree, so its key leaves out the steps below it (a new base image
// finds the same layer); the stage's key after it still depends on them
// (see chainLinked).
func newLinkedKey(kind, parent string) *stepKey {
	k := newStepKey(kind+"-link", "")
	k.linked, k.below = true, parent
	return k
}

// chainLinked makes the stage's key after a linked step depend on the
// steps below it and on the linked layer both: later steps run on the
// whole chain.
func chainLinked(s *stage, k *stepKey, key string) {
	if !k.linked {
		return
	}
	c := newStepKey("link-chain", k.below)
	c.add("linked", key)
	s.key = c.sum()
}
