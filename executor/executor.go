// Package executor runs Dockerfile steps against overlay root filesystems:
// RUN in a fresh namespaced sandbox whose PID 1 is kiln-init (package
// stepinit; kiln itself re-executed when built without it), COPY/ADD/WORKDIR
// through the copier in a re-executed child of the kiln binary; either way
// every mount dies with the child's mount namespace.
package executor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/kiln-build/kiln/executor/copier"
)

// Rootfs is an overlay view. Lowers are directories in overlay format
// (whiteouts as 0:0 char devices, opaque dirs as trusted.overlay.opaque=y),
// top-most first. Upper and Work are fresh empty directories on the same
// filesystem; when Upper is empty the view is mounted read-only.
type Rootfs struct {
	Lowers []string
	Upper  string
	Work   string
}

// RunSpec is one RUN step.
type RunSpec struct {
	Rootfs Rootfs
	Args   []string // argv, already shell-wrapped by the planner
	// Env is the command's environment, KEY=VALUE. argv[0] is looked up in
	// its PATH. Like runc (and so BuildKit), HOME is added from the user's
	// passwd entry ("/" without one) when Env has none.
	Env []string
	Cwd string // absolute path inside the rootfs; created (root-owned) if missing; "" is "/"
	// User as written in the Dockerfile USER instruction ("", "name",
	// "uid", "name:group", "uid:gid"); resolved inside the rootfs against
	// /etc/passwd and /etc/group, with supplementary groups.
	User string
	// Files are provided to the command and never reach the layer: under
	// /dev they are written to the sandbox's /dev tmpfs (BuildKit runs a
	// heredoc script with a shebang from /dev/pipes), elsewhere they are
	// bind-mounted read-only.
	Files []File
	// Stdin, when set, is the command's standard input (kiln debug's
	// interactive shell); a build step reads /dev/null.
	Stdin    *os.File
	Hostname string // "" is "buildkitsandbox"
	// Network is NetworkDefault (also ""), NetworkNone or NetworkHost
	// (which needs EntitlementNetworkHost in Sandbox.Allow).
	Network string
	// Net is the build's network namespace for NetworkDefault, shared by
	// its steps (NewNetwork); nil sets one up for this step alone.
	Net *Network
	// Stdout and Stderr receive the command's output; nil discards it. An
	// *os.File is handed to the command as is, anything else through a
	// pipe.
	Stdout io.Writer
	Stderr io.Writer

	// Sandbox carries the build-wide sandbox settings (limits, hardening);
	// the planner passes it through unchanged.
	Sandbox Sandbox
	// Security is RUN --security: "" or "sandbox" (default), "insecure".
	Security string
	// Mounts are RUN --mount mounts, applied after the rootfs is mounted.
	Mounts []Mount
	// Warm, when set, is the build's supply of sandbox children started
	// ahead of their steps (NewWarm).
	Warm *Warm
	// Stubs, when set, carries what a stage's RUN steps learn about its
	// image's mount points from one step to the next.
	Stubs *StubCache
}

// Sandbox holds the build-wide settings of every RUN sandbox. The zero
// value is the default: no memory or CPU limits, DefaultPidsLimit
// processes, Docker's default hardening, no timeout.
type Sandbox struct {
	// Memory limits the step's memory in bytes; 0 is unlimited.
	Memory int64
	// MemorySwap limits memory plus swap, as docker's --memory-swap: 0 is
	// twice Memory, -1 unlimited swap. Only with Memory.
	MemorySwap int64
	// CPUShares is the step's relative CPU weight (1024 is the default
	// weight); 0 leaves the default.
	CPUShares uint64
	// CPUs caps the step's CPU time: 1.5 is one and a half cores; 0 is
	// unlimited.
	CPUs float64
	// PidsLimit caps the step's processes and threads: 0 is
	// DefaultPidsLimit, -1 unlimited.
	PidsLimit int64
	// BlkioWeight is the step's relative block I/O weight, 10 to 1000; 0
	// leaves the default.
	BlkioWeight uint16
	// StepTimeout kills a step that runs longer; 0 is no limit.
	StepTimeout time.Duration
	// UserNS is the user namespace mode: "" or "host", or "auto" where
	// kiln runs as a normal user (Rootless): container root is then the
	// user, and other IDs come from the user's /etc/subuid range.
	UserNS string
	// Allow lists the entitlements the build grants, as BuildKit's
	// --allow: EntitlementInsecure lets RUN --security=insecure lift the
	// hardening; EntitlementNetworkHost allows host networking;
	// EntitlementNoCgroup and EntitlementNoSeccomp let RUN steps run on a
	// host that cannot give them a cgroup or a seccomp filter.
	Allow []string

	// ExtraHosts are added to every step's /etc/hosts (--add-host); like
	// the rest of the file they never reach a layer.
	ExtraHosts []HostIP
	// ShmSize is the size of /dev/shm in bytes; 0 is DefaultShmSize.
	ShmSize int64
	// Ulimits are set on every RUN command (--ulimit).
	Ulimits []Ulimit
}

// DefaultPidsLimit caps the processes of a step when Sandbox.PidsLimit is
// 0: far more than a build needs, few enough that a fork bomb cannot take
// the host down.
const DefaultPidsLimit = 4096

// EntitlementInsecure is the entitlement that RUN --security=insecure
// needs.
const EntitlementInsecure = "security.insecure"

// EntitlementNoCgroup lets RUN steps run where kiln cannot give them a
// cgroup: without resource limits, and with devices guarded by dropping
// CAP_MKNOD and mounting the root nodev instead of a device allow-list.
const EntitlementNoCgroup = "security.nocgroup"

// EntitlementNoSeccomp lets RUN steps run without a seccomp filter on an
// architecture kiln has no system call table for.
const EntitlementNoSeccomp = "security.noseccomp"

// entitlements are the entitlements Check knows.
var entitlements = []string{EntitlementInsecure, EntitlementNetworkHost, EntitlementNoCgroup, EntitlementNoSeccomp}

// Allows reports whether the build grants entitlement.
func (s Sandbox) Allows(entitlement string) bool {
	return slices.Contains(s.Allow, entitlement)
}

// Check refuses settings out of range. It does not look at the host: Run
// reports limits that the host cannot enforce.
func (s Sandbox) Check() error {
	switch {
	case s.Memory < 0:
		return fmt.Errorf("memory limit %d must not be negative", s.Memory)
	case s.Memory > 0 && s.Memory < 6<<20:
		// As docker: below that even the sandbox init cannot start.
		return fmt.Errorf("memory limit %s is below the minimum of 6 MiB", FormatBytes(s.Memory))
	case s.MemorySwap != 0 && s.Memory == 0:
		return errors.New("a memory+swap limit needs a memory limit")
	case s.MemorySwap > 0 && s.MemorySwap < s.Memory:
		return fmt.Errorf("memory+swap limit %s is below the memory limit %s", FormatBytes(s.MemorySwap), FormatBytes(s.Memory))
	case s.MemorySwap < -1:
		return fmt.Errorf("memory+swap limit %d: use -1 for unlimited", s.MemorySwap)
	case s.CPUs < 0:
		return fmt.Errorf("CPU limit %g must not be negative", s.CPUs)
	case s.CPUs > 0 && s.CPUs < 0.01:
		return fmt.Errorf("CPU limit %g is below the minimum of 0.01", s.CPUs)
	case s.CPUShares == 1:
		return errors.New("CPU shares must be at least 2")
	case s.PidsLimit < -1:
		return fmt.Errorf("pids limit %d: use -1 for unlimited", s.PidsLimit)
	case s.BlkioWeight != 0 && (s.BlkioWeight < 10 || s.BlkioWeight > 1000):
		return fmt.Errorf("block I/O weight %d must be between 10 and 1000", s.BlkioWeight)
	case s.StepTimeout < 0:
		return fmt.Errorf("step timeout %v must not be negative", s.StepTimeout)
	}
	switch s.UserNS {
	case "", "host":
	case "auto":
		if !Rootless() {
			// Root's store is owned by real root, which a mapped range
			// could not write.
			return errors.New("user namespace mode auto is not supported for kiln run as root yet: run kiln as a normal user for a rootless build")
		}
	default:
		return fmt.Errorf("user namespace mode %q is not supported (host, or auto for a rootless build)", s.UserNS)
	}
	if err := s.checkRunFlags(); err != nil {
		return err
	}
	for _, e := range s.Allow {
		if err := checkEntitlement(e); err != nil {
			return err
		}
	}
	return nil
}

// Limited reports whether s asks for a limit that only cgroups enforce:
// the default pids limit is applied when cgroups are available, these
// must be or the step fails.
func (s Sandbox) Limited() bool {
	return s.Memory != 0 || s.MemorySwap != 0 || s.CPUShares != 0 || s.CPUs != 0 || s.PidsLimit > 0 || s.BlkioWeight != 0
}

// pidsLimit is the effective limit, -1 for none.
func (s Sandbox) pidsLimit() int64 {
	if s.PidsLimit == 0 {
		return DefaultPidsLimit
	}
	return s.PidsLimit
}

// FormatBytes writes a size the way the OOM message gives the limit:
// "64 MiB", "2 GiB", "1536 KiB", "1000 bytes".
func FormatBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// Mount is one RUN --mount: Source (a host directory or file) bind-mounted
// at Target, or a tmpfs when Type is "tmpfs".
type Mount struct {
	Type     string `json:"type"` // "bind", "tmpfs" or "layers"
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	Readonly bool   `json:"readonly,omitempty"`
	// Size caps a tmpfs, in bytes (RUN --mount=type=tmpfs,size=); 0 is
	// the kernel's default, half of RAM.
	Size int64 `json:"size,omitempty"`

	// For "layers" (RUN --mount=type=bind,from=STAGE): an overlay of
	// Lowers (top-most first) with Upper and Work taking throwaway writes is
	// mounted at Stage, an empty directory the caller owns, and its SubPath
	// is bound at Target.
	Lowers  []string `json:"lowers,omitempty"`
	Upper   string   `json:"upper,omitempty"`
	Work    string   `json:"work,omitempty"`
	Stage   string   `json:"stage,omitempty"`
	SubPath string   `json:"subPath,omitempty"`
}

// File is a file the sandbox provides to a RUN command, owned by root.
type File struct {
	Path string // absolute, inside the sandbox
	Data []byte
	Mode os.FileMode // permission bits; 0 is 0644
}

// ExitError reports a RUN command that exited non-zero or was killed.
type ExitError struct {
	Code   int    // exit status, or 128+signal
	Signal string // set when killed by a signal, without "SIG": "KILL"
	// Reason is set when the command could not be started at all, e.g.
	// `exec: "foo": executable file not found in $PATH` (Code 127, like a
	// shell) or a permission error (Code 126); or, with Killed, why the
	// sandbox killed it: "out of memory (limit 64 MiB)", "timed out after
	// 10s (--step-timeout)".
	Reason string
	// Killed is set when the sandbox killed the step for a limit. The
	// planner reports it as "RUN at line N was killed: " + Reason.
	Killed bool
	// PidsLimit is set when the step failed after the kernel refused it a
	// process for the pids limit (a fork bomb): the limit it hit.
	PidsLimit int64
}

func (e *ExitError) Error() string {
	if e.Killed {
		return "killed: " + e.Reason
	}
	msg := fmt.Sprintf("exit code %d", e.Code)
	if e.Signal != "" {
		msg = "killed by signal " + e.Signal
	}
	if e.PidsLimit > 0 {
		msg += fmt.Sprintf(" (the step reached its limit of %d processes, --pids-limit)", e.PidsLimit)
	}
	if e.Reason != "" {
		return e.Reason + ": " + msg
	}
	return msg
}

// CopySpec is one COPY, ADD or WORKDIR step: the copier's Op runs with the
// destination rootfs mounted read-write and, when Source has Lowers, a
// read-only overlay of the source stage.
type CopySpec struct {
	Rootfs Rootfs
	// SourceDir is a plain host directory holding the sources (the build
	// context, or a directory of heredoc files). Ignored when Source has
	// lowers; may be empty for an op without sources (mkdir).
	SourceDir string
	// Source is a read-only view of another stage or image (COPY --from).
	Source Rootfs
	Op     copier.Op
}
