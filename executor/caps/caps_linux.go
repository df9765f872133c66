// Package caps holds the capabilities a RUN step's command may keep, and
// limits the bounding set of the thread the command is started from.
package caps

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Cap is one capability, by the name Docker's profiles use and its number.
type Cap struct {
	Name  string
	Value int
}

// Default is Docker's default capability set, which BuildKit gives RUN
// steps: a build may chown, mknod or bind low ports, but not mount, load
// modules or change the clock. Without this a RUN step as root could, say,
// mknod the host's disk and mount it.
var Default = []Cap{
	{"CAP_CHOWN", unix.CAP_CHOWN},
	{"CAP_DAC_OVERRIDE", unix.CAP_DAC_OVERRIDE},
	{"CAP_FOWNER", unix.CAP_FOWNER},
	{"CAP_FSETID", unix.CAP_FSETID},
	{"CAP_KILL", unix.CAP_KILL},
	{"CAP_SETGID", unix.CAP_SETGID},
	{"CAP_SETUID", unix.CAP_SETUID},
	{"CAP_SETPCAP", unix.CAP_SETPCAP},
	{"CAP_NET_BIND_SERVICE", unix.CAP_NET_BIND_SERVICE},
	{"CAP_NET_RAW", unix.CAP_NET_RAW},
	{"CAP_SYS_CHROOT", unix.CAP_SYS_CHROOT},
	{"CAP_MKNOD", unix.CAP_MKNOD},
	{"CAP_AUDIT_WRITE", unix.CAP_AUDIT_WRITE},
	{"CAP_SETFCAP", unix.CAP_SETFCAP},
}

// Without returns set less the capabilities numbered drop.
func Without(set []Cap, drop ...int) []Cap {
	var out []Cap
	for _, c := range set {
		keep := true
		for _, d := range drop {
			if c.Value == d {
				keep = false
			}
		}
		if keep {
			out = append(out, c)
		}
	}
	return out
}

// Has reports whether set holds the capability numbered value.
func Has(set []Cap, value int) bool {
	for _, c := range set {
		if c.Value == value {
			return true
		}
	}
	return false
}

// LimitBounding removes every capability but keep from the bounding set of
// the calling thread, which a command forked from it inherits: a root
// command then starts with exactly keep. The calling thread keeps its own
// effective capabilities (the sandbox init needs SETUID, SETGID and KILL
// to start and signal the command). The caller must be locked to its
// thread.
func LimitBounding(keep []Cap) error {
	// Capabilities the kernel does not know fail with EINVAL: the end.
	for c := 0; c < 64; c++ {
		if Has(keep, c) {
			continue
		}
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dropping capability %d: %w", c, err)
		}
	}
	return nil
}
