// Package procs tunes the Go runtime for kiln: worker pools follow the CPUs
// the runtime found (CPUs), while the Go scheduler gets a few more Ps
// than that (Raise), and the first collection waits for a heap that is
// worth collecting (DelayGC).
package procs

import (
	"os"
	"runtime"
)

// cpus is the runtime's own GOMAXPROCS, taken before Raise changes it:
// the host's CPUs, or its cgroup's CPU limit.
var cpus = runtime.GOMAXPROCS(0)

// CPUs is how many goroutines of CPU-bound work run at once: the size of
// worker pools (hashing, compression, lstat).
func CPUs() int { return cpus }

// spare is how many Ps Raise adds beyond the CPUs.
const spare = 2

// Raise gives the scheduler spare Ps, unless GOMAXPROCS is set in the
// environment. Some of kiln's system calls block for milliseconds in the
// kernel (moving a sandbox into its cgroup v1 waits for an RCU grace
// period; a cgroup's rmdir waits for the cgroup mutex), and a goroutine in
// a system call keeps its P until sysmon takes it back, which can take
// 10 ms when the process has been busy. With as many Ps as CPUs, two such
// calls on two CPUs stall every other goroutine for that long: the step
// whose init waits for its placement message took 18 ms instead of 6, a
// few times per 30-step build. Spare Ps let other goroutines run; the
// CPUs stay shared by the kernel.
func Raise() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(cpus + spare)
}
