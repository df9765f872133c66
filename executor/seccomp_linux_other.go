//go:build linux && !amd64

package executor

// kiln has no system call table for this architecture yet: RUN steps run
// without a seccomp filter (capabilities, masks and cgroups still apply).
const seccompSupported = false

const (
	seccompArch    = 0
	seccompX32Bit  = 0
	sysSocket      = 0
	sysPersonality = 0
	sysClone       = 0
	sysClone3      = 0
)

var seccompAllowed []uint32
