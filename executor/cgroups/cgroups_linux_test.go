package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRemoveStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups")
	}
	h, err := Host()
	if err != nil {
		t.Skipf("needs cgroups: %v", err)
	}
	// A pid above pid_max is never alive.
	stale := map[string]string{}
	for c, dir := range h.Dirs {
		p := filepath.Join(dir, "kiln-step-99999999-0badc0de")
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		stale[c] = p
	}
	removeStale(h)
	for c, p := range stale {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("stale %s cgroup %s not removed", c, p)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/tab\011x`: "/tab\tx"} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
