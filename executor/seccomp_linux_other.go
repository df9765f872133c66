//go:build linux && !amd64 && !arm64

package executor

// kiln has no system call table for this architecture yet: RUN steps run
// without a seccomp filter (capabilities, masks, devices and cgroups still
// apply).
const seccompSupported = false

var seccompABIs []seccompABI
