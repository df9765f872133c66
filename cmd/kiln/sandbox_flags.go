package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/executor"
)

// sandboxFlags are the raw values of the sandbox flags; sizes stay strings
// until parsed, so that "64m" and "1g" work as with docker.
type sandboxFlags struct {
	memory, memorySwap, cpus, userns string
	cpuShares                        uint64
	pidsLimit                        int64
	blkioWeight                      uint16
	stepTimeout                      time.Duration
	allow                            []string
	fs                               *pflag.FlagSet
	run                              func(*executor.Sandbox) error // run_flags.go
}

// addSandboxFlags registers the flags that shape every RUN sandbox and
// returns the function that reads them once parsed.
func addSandboxFlags(fs *pflag.FlagSet) func() (executor.Sandbox, error) {
	f := &sandboxFlags{fs: fs, run: addRunFlags(fs)}
	fs.StringVarP(&f.memory, "memory", "m", "", "memory limit of each RUN step, e.g. 512m or 2g (default unlimited)")
	fs.StringVar(&f.memorySwap, "memory-swap", "", "memory plus swap limit of each RUN step; -1 for unlimited swap (default twice --memory)")
	fs.Uint64Var(&f.cpuShares, "cpu-shares", 0, "relative CPU weight of RUN steps (1024 is the normal weight)")
	fs.StringVar(&f.cpus, "cpus", "", "CPU limit of each RUN step in cores, e.g. 1.5 (default unlimited)")
	fs.Int64Var(&f.pidsLimit, "pids-limit", executor.DefaultPidsLimit, "maximum processes and threads of each RUN step; -1 for unlimited")
	fs.Uint16Var(&f.blkioWeight, "blkio-weight", 0, "relative block I/O weight of RUN steps, 10 to 1000")
	fs.DurationVar(&f.stepTimeout, "step-timeout", 0, "kill a RUN step that runs longer than this, e.g. 10m (default no limit)")
	fs.StringVar(&f.userns, "userns", "host", "user namespace of RUN steps: host, or auto (a normal user's kiln maps container root to the user and other IDs to its /etc/subuid range)")
	fs.StringArrayVar(&f.allow, "allow", nil, "grant an entitlement (repeatable): security.insecure lets RUN --security=insecure lift the sandbox's hardening; network.host lets RUN steps use the host's network (--network=host, RUN --network=host); security.nocgroup runs RUN steps where kiln cannot give them a cgroup (no resource limits, CAP_MKNOD dropped); security.noseccomp runs them without a seccomp filter where kiln has no system call table for the architecture")
	return f.sandbox
}

func (f *sandboxFlags) sandbox() (executor.Sandbox, error) {
	s := executor.Sandbox{
		CPUShares:   f.cpuShares,
		PidsLimit:   f.pidsLimit,
		BlkioWeight: f.blkioWeight,
		StepTimeout: f.stepTimeout,
		Allow:       f.allow,
	}
	if f.pidsLimit == 0 {
		return s, usagef("--pids-limit 0: give a positive limit, or -1 for unlimited")
	}
	if !f.fs.Changed("pids-limit") {
		// The default limit, which applies only where cgroups do.
		s.PidsLimit = 0
	}
	if err := executor.RootlessError(); err != nil {
		// kiln runs as a normal user outside a user namespace: nothing
		// of a build would work.
		return s, err
	}
	switch {
	case executor.Rootless() && !f.fs.Changed("userns"):
		s.UserNS = "auto"
	case executor.Rootless() && f.userns == "host":
		return s, usagef("--userns host: a normal user's kiln runs in a user namespace of its own; use auto, or run kiln as root")
	case f.userns != "host":
		s.UserNS = f.userns
	}
	if err := f.run(&s); err != nil {
		return s, err
	}
	var err error
	if f.memory != "" {
		if s.Memory, err = parseSize(f.memory); err != nil {
			return s, usagef("--memory %s: %v", f.memory, err)
		}
	}
	switch f.memorySwap {
	case "":
	case "-1":
		s.MemorySwap = -1
	default:
		if s.MemorySwap, err = parseSize(f.memorySwap); err != nil {
			return s, usagef("--memory-swap %s: %v", f.memorySwap, err)
		}
	}
	if f.cpus != "" {
		s.CPUs, err = strconv.ParseFloat(f.cpus, 64)
		if err != nil || math.IsNaN(s.CPUs) || math.IsInf(s.CPUs, 0) {
			return s, usagef("--cpus %s: want a number of cores, e.g. 1.5", f.cpus)
		}
	}
	if err := s.Check(); err != nil {
		return s, usagef("sandbox settings: %v", err)
	}
	// What an earlier build of this boot found: a RUN step asks the
	// kernel again, and a build without one asks nothing.
	if err := executor.CgroupsExpected(); err != nil {
		// Say so rather than silently build without limits.
		if s.Limited() {
			return s, fmt.Errorf("resource limits (--memory, --cpus, --pids-limit ...) are unavailable: %w", err)
		}
		switch {
		case executor.Rootless():
			fmt.Fprintf(os.Stderr, "kiln: warning: RUN steps run without a cgroup, so without the default pids limit: %v\n", err)
		case s.Allows(executor.EntitlementNoCgroup):
			fmt.Fprintf(os.Stderr, "kiln: warning: RUN steps run without a cgroup (--allow %s): no pids limit, and CAP_MKNOD dropped instead of a device allow-list: %v\n", executor.EntitlementNoCgroup, err)
		}
		// Otherwise a RUN step refuses to run, saying what to do; a
		// build without one needs no cgroup.
	}
	return s, nil
}

// parseSize reads a size as docker does: a number with an optional binary
// unit, b, k, m, g, t or p, in either case and optionally followed by b or
// ib ("64m", "1.5GiB", "512MB"); a bare number is bytes.
func parseSize(s string) (int64, error) {
	num := strings.TrimRightFunc(s, func(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' })
	unit := strings.ToLower(s[len(num):])
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "b"), "i")
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
	sh, ok := shift[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("want a size such as 64m or 1g")
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("want a size such as 64m or 1g")
	}
	n *= float64(uint64(1) << sh)
	if n >= math.MaxInt64 {
		return 0, fmt.Errorf("size too large")
	}
	return int64(n), nil
}

// checkNetworkFlag refuses a --network that does not exist, and host
// networking without its entitlement.
func checkNetworkFlag(mode string, s executor.Sandbox) error {
	switch mode {
	case "", executor.NetworkDefault, executor.NetworkNone:
		return nil
	case executor.NetworkHost:
		if !s.Allows(executor.EntitlementNetworkHost) {
			return usagef("--network=host shares the host's network, its loopback services included, with every RUN step: add --allow %s to grant it", executor.EntitlementNetworkHost)
		}
		return nil
	}
	return usagef("--network %s: use default, none or host", mode)
}
