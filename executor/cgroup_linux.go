package executor

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/kiln-build/kiln/executor/cgroups"
	"github.com/kiln-build/kiln/executor/devices"
	"github.com/kiln-build/kiln/executor/seccomp"
	"github.com/kiln-build/kiln/executor/stepinit"
	"github.com/kiln-build/kiln/internal/userns"
)

// hostLacksEnv is a test-only knob: a comma-separated list of host features
// ("cgroup", "devicefilter", "seccomp") that kiln then treats as missing,
// so that tests can check each guard fails closed on a host that has them
// all. It can only take guards away, and every guard it takes away then
// needs its --allow entitlement or is replaced, exactly as on a host that
// lacks the feature.
const hostLacksEnv = "_KILN_TEST_HOST_LACKS"

// hostLacks reports whether the test knob marks feature as missing.
func hostLacks(feature string) bool {
	return slices.Contains(strings.Split(os.Getenv(hostLacksEnv), ","), feature)
}

// CgroupsAvailable reports why RUN steps cannot get cgroups of their own
// (rootless without delegation, no controllers mounted), or nil. Without
// them Run refuses a Sandbox that is Limited, and any other RUN step unless
// the build allows EntitlementNoCgroup (a rootless build needs no
// entitlement: see newStepCgroup).
func CgroupsAvailable() error {
	if hostLacks("cgroup") {
		return fmt.Errorf("cgroups are marked missing by %s", hostLacksEnv)
	}
	return cgroups.Available()
}

// CgroupsExpected is CgroupsAvailable's answer as an earlier kiln of
// this boot found it, without asking the kernel again (see
// cgroups.Expected): for checks before the build. A RUN step always
// asks CgroupsAvailable.
func CgroupsExpected() error {
	if hostLacks("cgroup") {
		return fmt.Errorf("cgroups are marked missing by %s", hostLacksEnv)
	}
	return cgroups.Expected()
}

// WaitCgroupsRemoved waits until the cgroups of the steps that ran are
// removed (they are removed in the background); kiln calls it before it
// exits. The error names a cgroup that could not be removed.
func WaitCgroupsRemoved() error {
	// A step's cgroup is removed once its sandbox is gone.
	WaitSandboxExits()
	err := cgroups.WaitRemoved()
	cgroups.RemoveFiltered()
	return err
}

// guards are the guards the child applies itself; see stepinit.Guards.
type guards = stepinit.Guards

// stepCgroup is a RUN step's cgroup, as Run and runChild use it.
type stepCgroup struct {
	*cgroups.Step
	memory, pids int64
}

// newStepCgroup creates a step's cgroup with the limits of s applied, and
// decides how the child guards what the host does not let kiln guard. It
// fails closed: a guard that cannot be applied either has an equivalent
// (devices) or stops the step with a message naming what is missing and
// the entitlement that allows running without it.
//
// Devices are guarded by the cgroup's allow-list (devices.Default). Where
// there is none, the child drops CAP_MKNOD and mounts the root nodev. In a
// user namespace (a rootless kiln) the kernel guards them itself: it
// refuses to create device nodes there, and every filesystem mounted in
// the namespace is nodev; host device nodes reached through bind mounts
// keep the host's permissions, which are not the user's.
//
// An insecure step may use every device, as a privileged container, and
// has no seccomp filter.
func newStepCgroup(s Sandbox, insecure bool) (*stepCgroup, guards, error) {
	var g guards
	if !insecure && (!seccomp.Supported() || hostLacks("seccomp")) {
		if !s.Allows(EntitlementNoSeccomp) {
			return nil, g, fmt.Errorf("RUN steps need a seccomp filter, and kiln has no system call table for %s: pass --allow %s to run them without one", seccomp.Arch(), EntitlementNoSeccomp)
		}
		g.NoSeccomp = true
	}
	inUserNS := userns.Running()
	if err := CgroupsAvailable(); err != nil {
		if s.Limited() {
			return nil, g, fmt.Errorf("resource limits are unavailable: %w", err)
		}
		if !Rootless() && !s.Allows(EntitlementNoCgroup) {
			return nil, g, fmt.Errorf("RUN steps need a cgroup of their own for the pids limit and the device filter, and none is available (%w): run kiln in a cgroup with the controllers delegated (systemd-run --scope -p Delegate=yes kiln ...), or pass --allow %s to run steps without resource limits (devices are then guarded by dropping CAP_MKNOD and mounting the root nodev)", err, EntitlementNoCgroup)
		}
		g.NoDevices = nodevFallback(insecure, inUserNS, false)
		return nil, g, nil
	}
	rules := devices.Default
	if insecure || hostLacks("devicefilter") {
		rules = nil
	}
	l := cgroups.Limits{
		Memory: s.Memory, MemorySwap: s.MemorySwap, CPUShares: s.CPUShares,
		CPUs: s.CPUs, Pids: s.pidsLimit(), BlkioWeight: s.BlkioWeight,
	}
	cg, err := cgroups.New(l, rules)
	if err != nil {
		return nil, g, err
	}
	g.NoDevices = nodevFallback(insecure, inUserNS, rules != nil && cg.DeviceFilterErr == nil)
	return &stepCgroup{Step: cg, memory: cg.Memory, pids: cg.Pids}, g, nil
}

// nodevFallback decides whether a step drops CAP_MKNOD and mounts its
// root nodev: when nothing else guards devices. filtered says the step's
// cgroup enforces the allow-list. In a user namespace the kernel is the
// guard (see newStepCgroup); an insecure step has none by design.
func nodevFallback(insecure, inUserNS, filtered bool) bool {
	return !insecure && !inUserNS && !filtered
}

func (cg *stepCgroup) cloneFD() int {
	if cg == nil {
		return -1
	}
	return cg.CloneFD()
}

func (cg *stepCgroup) add(pid int) error { return cg.Add(pid) }
func (cg *stepCgroup) kill()             { cg.Kill() }

// remove hands the cgroup to a background removal (cgroups.RemoveLater):
// the step that ran in it is over and its counters read, and the next
// step must not wait for the kernel to tear it down. Its error, if any,
// comes from WaitCgroupsRemoved.
func (cg *stepCgroup) remove() error {
	cg.RemoveLater()
	return nil
}
func (cg *stepCgroup) oomKilled() bool { return cg.OOMKilled() }
func (cg *stepCgroup) pidsLimitHit() bool {
	return cg.PidsLimitHit()
}
