package executor

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// defaultCaps is Docker's default capability set, which BuildKit gives RUN
// steps: a build may chown, mknod or bind low ports, but not mount, load
// modules or change the clock. Without this a RUN step as root could, say,
// mknod the host's disk and mount it.
var defaultCaps = map[int]bool{
	unix.CAP_CHOWN:            true,
	unix.CAP_DAC_OVERRIDE:     true,
	unix.CAP_FOWNER:           true,
	unix.CAP_FSETID:           true,
	unix.CAP_KILL:             true,
	unix.CAP_SETGID:           true,
	unix.CAP_SETUID:           true,
	unix.CAP_SETPCAP:          true,
	unix.CAP_NET_BIND_SERVICE: true,
	unix.CAP_NET_RAW:          true,
	unix.CAP_SYS_CHROOT:       true,
	unix.CAP_MKNOD:            true,
	unix.CAP_AUDIT_WRITE:      true,
	unix.CAP_SETFCAP:          true,
}

// dropBoundingCaps removes every other capability from the bounding set of
// the calling thread, which a command forked from it inherits: a root
// command then starts with exactly the default set. The sandbox init
// keeps its own capabilities; it needs none beyond SETUID and SETGID (to
// start the command) and KILL. The caller must be locked to its thread.
func dropBoundingCaps() error {
	// Capabilities the kernel does not know fail with EINVAL: the end.
	for c := 0; c < 64; c++ {
		if defaultCaps[c] {
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
