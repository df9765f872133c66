package executor

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/stepinit"
)

// TestStubCache: a plan holds for new layers on top only while none of
// them has one of its names at its root, or an opaque root.
func TestStubCache(t *testing.T) {
	layer := func(entries ...string) string {
		dir := t.TempDir()
		for _, e := range entries {
			if err := os.Mkdir(filepath.Join(dir, e), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	base := layer("etc", "proc")
	plan := &stepinit.StubPlan{Names: []string{"proc", "dev", "sys", "etc"}}
	var c StubCache
	c.remember(plan, []string{base})
	if c.planFor([]string{base}) != plan {
		t.Fatal("no plan for the same layers")
	}
	ok := layer("step1", "usr")
	if c.planFor([]string{ok, base}) != plan {
		t.Fatal("no plan over a layer that touches none of its names")
	}
	if c.planFor([]string{base}) != nil {
		t.Fatal("a plan for fewer layers than it was checked on")
	}
	c.remember(plan, []string{base})
	if c.planFor([]string{layer("etc"), base}) != nil {
		t.Fatal("a plan over a layer with /etc")
	}
	if c.planFor([]string{ok, base}) != nil {
		t.Fatal("the plan outlived a layer that invalidated it")
	}
	c.remember(plan, []string{base})
	if c.planFor([]string{ok, layer("other")}) != nil {
		t.Fatal("a plan on other layers below")
	}
	c.remember(plan, []string{base})
	opaque := layer("usr")
	if err := unix.Lsetxattr(opaque, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Skipf("no trusted xattrs here: %v", err)
	}
	if c.planFor([]string{opaque, base}) != nil {
		t.Fatal("a plan over an opaque layer root")
	}
	var none *StubCache
	none.remember(plan, nil)
	if none.planFor(nil) != nil {
		t.Fatal("a nil cache kept a plan")
	}
}
