// Package stepinit is PID 1 of a RUN step's sandbox: it mounts the step's
// root (overlay, /proc, /dev, /sys, masks, RUN --mount mounts), pivots into
// it, drops capabilities, loads the seccomp filter, switches to the step's
// user, runs the command, forwards signals to it and reaps orphans.
//
// It is the whole of cmd/kiln-init, a small static program that kiln embeds
// and executes for each RUN step instead of re-executing itself: it must
// link nothing a step's PID 1 does not need (no BuildKit parser, protobuf,
// HTTP or compressors), because their package initialisation and page
// faults are paid at every step. The imports are checked by a test.
//
// kiln (package executor) speaks to it over two pipes: the Prelude, the
// Spec, a MountReady, then a Placement, as JSON on fd SpecFD; Msg reports
// back on fd ReportFD.
package stepinit

import "os"

// SandboxArg is the argv[1] of every sandbox child, whether it is
// kiln-init or kiln re-executed: it is what shows in /proc/1/cmdline
// inside the sandbox, and what makes a re-executed kiln become the child.
const SandboxArg = "__kiln-sandbox"

// The child's descriptors, as the parent hands them over (exec.Cmd's
// ExtraFiles).
const (
	SpecFD   = 3 // the Prelude, the Spec, a MountReady, then the Placement
	ReportFD = 4 // Msgs to the parent
	// NetnsFD is where a RUN child finds the network namespace to join
	// (Prelude.JoinNet).
	NetnsFD = 5
)

// Rootfs is an overlay view, as executor.Rootfs (which converts to it).
type Rootfs struct {
	Lowers []string
	Upper  string
	Work   string
}

// File is a file provided to the command, as executor.File.
type File struct {
	Path string
	Data []byte
	Mode os.FileMode
}

// Mount is a RUN --mount mount, as executor.Mount.
type Mount struct {
	Type     string `json:"type"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	Readonly bool   `json:"readonly,omitempty"`
	Size     int64  `json:"size,omitempty"`

	Lowers  []string `json:"lowers,omitempty"`
	Upper   string   `json:"upper,omitempty"`
	Work    string   `json:"work,omitempty"`
	Stage   string   `json:"stage,omitempty"`
	SubPath string   `json:"subPath,omitempty"`
}

// Guards are the guards that the child applies itself because the host
// could not give the step the usual ones.
type Guards struct {
	// NoDevices: the step has no device filter (no cgroup, or the kernel
	// refused the filter), so the child drops CAP_MKNOD and remounts every
	// mount of the root nodev but its own /dev: no device node the step
	// can open but the few kiln put in /dev.
	NoDevices bool `json:"noDevices,omitempty"`
	// NoSeccomp: kiln has no system call table for this architecture and
	// the build allows running without a filter.
	NoSeccomp bool `json:"noSeccomp,omitempty"`
}

// Prelude is the parent's first message to a RUN child: what its step's
// sandbox is made of before the step is known. The child mounts its step
// tmpfs, /proc, /dev and /sys from it while it waits for the Spec; a child
// started ahead of its step (executor.Warm) has them ready when the step
// comes. The Spec repeats it, and the child refuses a Spec that differs.
type Prelude struct {
	// StepDir is where the child mounts its tmpfs of mount points, in
	// its own mount namespace: on the host it stays empty.
	StepDir  string `json:"stepDir"`
	Insecure bool   `json:"insecure,omitempty"`
	// NetNone: a network namespace of the step's own, with only lo.
	NetNone bool `json:"netNone,omitempty"`
	// JoinNet: the child joins the network namespace on NetnsFD.
	JoinNet bool `json:"joinNet,omitempty"`
	// ShmSize is the size of /dev/shm in bytes; 0 is 64 MiB.
	ShmSize int64 `json:"shmSize,omitempty"`
}

// Spec is what the parent sends a sandbox child on SpecFD. Mode "run" is
// this package's; kiln's copy child reads a Spec extended with the copy's
// fields (it uses the Prelude's StepDir only, and gets no Prelude first).
type Spec struct {
	Mode string `json:"mode"` // "run" or "copy"
	Prelude
	Rootfs   Rootfs `json:"rootfs"`
	Volatile bool   `json:"volatile,omitempty"`

	Args     []string `json:"args,omitempty"`
	Env      []string `json:"env,omitempty"`
	Cwd      string   `json:"cwd,omitempty"`
	User     string   `json:"user,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
	Files    []File   `json:"files,omitempty"`
	// Interactive: the command reads the child's stdin.
	Interactive bool    `json:"interactive,omitempty"`
	Mounts      []Mount `json:"mounts,omitempty"`
	Guards      Guards  `json:"guards"`

	// ResolvConf is bound at /etc/resolv.conf when the child joins the
	// build's network (JoinNet).
	ResolvConf string `json:"resolvConf,omitempty"`

	// ExtraHosts are lines appended to the step's /etc/hosts.
	ExtraHosts string `json:"extraHosts,omitempty"`
	// Rlimits are set before the command starts, which inherits them.
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	// Stubs, when set, is the stub plan of an earlier step that holds
	// for these layers (executor.StubCache): the step does not probe.
	Stubs *StubPlan `json:"stubs,omitempty"`
}

// Rlimit is one resource limit of the command: Resource is the kernel's
// RLIMIT_* number, and ^uint64(0) is unlimited.
type Rlimit struct {
	Resource int    `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// MountReady is the parent's message to a RUN child, after its Spec, that
// it may mount its root: the build network it joins is up (its
// resolv.conf written). The child does what comes before in the
// meantime.
type MountReady struct {
	Ready bool `json:"mountReady"`
}

// Placement is the parent's last message to a RUN child: it is in the
// step's cgroup now.
type Placement struct {
	Placed bool `json:"placed"`
}

// Msg is one report from the child on ReportFD; the last one has Done
// set.
type Msg struct {
	NoVolatile bool `json:"noVolatile,omitempty"`
	// Stubs is the stub plan the step made, when a later step on more
	// layers may use it (see StubPlan).
	Stubs *StubPlan `json:"stubs,omitempty"`

	Done       bool   `json:"done,omitempty"`
	Error      string `json:"error,omitempty"`    // setup or copier error
	NotFound   string `json:"notFound,omitempty"` // a copier NotFoundError's fields
	ExcludedBy string `json:"excludedBy,omitempty"`
	Exit       *int   `json:"exit,omitempty"` // RUN command status
	Signal     string `json:"signal,omitempty"`
	Reason     string `json:"reason,omitempty"`
}
