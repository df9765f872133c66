package executor

import (
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/stepinit"
)

// rlimitResources maps --ulimit names to the kernel's resources.
var rlimitResources = map[string]int{
	"core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU,
	"data": unix.RLIMIT_DATA, "fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS,
	"memlock": unix.RLIMIT_MEMLOCK, "msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE,
	"nofile": unix.RLIMIT_NOFILE, "nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS,
	"rtprio": unix.RLIMIT_RTPRIO, "rttime": unix.RLIMIT_RTTIME, "sigpending": unix.RLIMIT_SIGPENDING,
	"stack": unix.RLIMIT_STACK,
}

// setRunFlags puts the sandbox's extra hosts, /dev/shm size and limits
// into the spec of a RUN child.
func setRunFlags(s Sandbox, cs *stepinit.Spec) {
	cs.ExtraHosts = hostsLines(s.ExtraHosts)
	cs.ShmSize = s.ShmSize
	for _, u := range s.Ulimits {
		cs.Rlimits = append(cs.Rlimits, stepinit.Rlimit{
			Resource: rlimitResources[u.Name], Soft: rlimitValue(u.Soft), Hard: rlimitValue(u.Hard),
		})
	}
}

// rlimitValue turns docker's -1 into the kernel's infinity.
func rlimitValue(v int64) uint64 {
	if v < 0 {
		return unix.RLIM_INFINITY
	}
	return uint64(v)
}
