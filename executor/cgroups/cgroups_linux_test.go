package cgroups

import (
	"errors"
	"fmt"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/devices"
	"github.com/kiln-build/kiln/internal/features"
)

func TestRemoveStale(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "needs root: creates cgroups")
	}
	h, err := Host()
	if err != nil {
		testutil.SkipHostf(t, "needs cgroups: %v", err)
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

// TestNewReportsRefusedFilter checks that a kernel refusing the device
// filter (EPERM, as in a container that forbids BPF programs below it) is
// reported, not swallowed: the caller must then guard devices itself.
func TestNewReportsRefusedFilter(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "needs root: creates cgroups")
	}
	h, err := Host()
	if err != nil {
		testutil.SkipHostf(t, "needs cgroups: %v", err)
	}
	t.Logf("cgroup v2: %v", h.V2)
	defer func(f func(*Step, []devices.Rule) error) { guardDevices = f }(guardDevices)
	guardDevices = func(cg *Step, rules []devices.Rule) error {
		return fmt.Errorf("attaching the device filter: %w", unix.EPERM)
	}
	for _, tt := range []struct {
		name  string
		rules []devices.Rule
		want  bool
	}{
		{"filter asked for", devices.Default, true},
		{"no filter asked for", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cg, err := New(Limits{Pids: 100}, tt.rules)
			if err != nil {
				t.Fatal(err)
			}
			defer cg.Remove()
			if got := cg.DeviceFilterErr != nil; got != tt.want {
				t.Errorf("DeviceFilterErr = %v, want an error: %v", cg.DeviceFilterErr, tt.want)
			}
			if tt.want && !errors.Is(cg.DeviceFilterErr, unix.EPERM) {
				t.Errorf("DeviceFilterErr = %v, want EPERM", cg.DeviceFilterErr)
			}
		})
	}
}

// Expected answers from the features cache when an earlier kiln of this
// boot saved an answer for the same user and cgroups, and asks the kernel
// otherwise.
func TestExpected(t *testing.T) {
	scope, err := cacheScope()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, scope string
		saved       cachedAnswer
		want        string // "" is Available's answer
	}{
		{"cached answer", scope, cachedAnswer{Err: "no cgroups, as an earlier kiln found"}, "no cgroups, as an earlier kiln found"},
		{"another cgroup's answer", "euid 0\n0::/elsewhere\n", cachedAnswer{Err: "elsewhere"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			features.Use(t.TempDir())
			features.Save(cacheName, tt.scope, tt.saved)
			got := Expected()
			if tt.want == "" {
				if want := Available(); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("Expected() = %v, want Available's %v", got, want)
				}
				return
			}
			if got == nil || got.Error() != tt.want {
				t.Errorf("Expected() = %v, want %q", got, tt.want)
			}
		})
	}
}
