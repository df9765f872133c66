// Package procs tunes the Go runtime for kiln: worker pools follow the CPUs
// the runtime found (CPUs), and the first collection waits for a heap
// that is worth collecting (DelayGC).
package procs

import (
	"runtime"
)

// CPUs is how many goroutines of CPU-bound work run at once, the size of
// worker pools (hashing, compression, lstat): the runtime's GOMAXPROCS,
// the host's CPUs or its cgroup's CPU limit.
func CPUs() int { return runtime.GOMAXPROCS(0) }
