// Package userns tells whether kiln runs in a user namespace, where the
// kernel allows fewer things than to real root: overlayfs needs its
// userxattr option and keeps opaque directories in user.overlay.opaque,
// device nodes cannot be created, sysfs of the host's network namespace
// cannot be mounted.
package userns

import (
	"os"
	"strings"
	"sync"
)

// Running reports whether this process runs in a user namespace other
// than the initial one. The initial namespace, and only it, maps the whole
// ID range onto itself ("0 0 4294967295"). Decided once: a process does
// not change user namespace after it started.
var Running = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		// No /proc: assume the host, as kiln always did.
		return false
	}
	return !isIdentity(string(b))
})

func isIdentity(uidMap string) bool {
	f := strings.Fields(uidMap)
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}
