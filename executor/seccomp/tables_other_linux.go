//go:build linux && !amd64 && !arm64

package seccomp

// kiln has no system call table for this architecture: Supported is false,
// and a RUN step refuses to run without --allow security.noseccomp.
var abis []abi
