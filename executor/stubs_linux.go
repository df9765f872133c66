package executor

import (
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/stepinit"
)

// StubCache keeps the stub plan of a stage's last RUN step (stepinit's
// StubPlan: which mount points its image lacked) with the layers it was
// made on. The next RUN step of the stage, on those layers and new ones
// on top, gets it instead of probing again when no new layer has any of
// the plan's top-level names at its root, nor an opaque root: nothing
// below those names can then differ. The zero value is empty; a nil
// cache keeps nothing.
type StubCache struct {
	mu     sync.Mutex
	plan   *stepinit.StubPlan
	lowers []string // top-most first, as Rootfs.Lowers
}

// planFor returns the plan if it holds for lowers, nil if not.
func (c *StubCache) planFor(lowers []string) *stepinit.StubPlan {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.plan == nil || len(lowers) < len(c.lowers) {
		return nil
	}
	added := lowers[:len(lowers)-len(c.lowers)]
	if !slices.Equal(lowers[len(added):], c.lowers) {
		return nil
	}
	for _, dir := range added {
		if touchesNames(dir, c.plan.Names) {
			c.plan = nil
			return nil
		}
	}
	c.lowers = slices.Clone(lowers)
	return c.plan
}

// remember keeps plan, made on lowers.
func (c *StubCache) remember(plan *stepinit.StubPlan, lowers []string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.plan, c.lowers = plan, slices.Clone(lowers)
}

// touchesNames reports whether the layer directory dir could change what
// lies below names: it has one of them at its root (an entry or a
// whiteout), its root is opaque, or it cannot be read.
func touchesNames(dir string, names []string) bool {
	for _, attr := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if _, err := unix.Lgetxattr(dir, attr, nil); err == nil || err == unix.ERANGE {
			return true
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		return true
	}
	defer f.Close()
	entries, err := f.Readdirnames(-1)
	if err != nil {
		return true
	}
	for _, e := range entries {
		if slices.Contains(names, e) {
			return true
		}
	}
	return false
}
