package emulate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountBinfmt mounts binfmt_misc at Dir unless it is there already (systemd
// usually mounts it; minimal VMs and containers do not).
func mountBinfmt() error {
	if _, err := os.Stat(filepath.Join(Dir, "register")); err != nil {
		if err := unix.Mount("binfmt_misc", Dir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mounting binfmt_misc at %s: %w (load it with `modprobe binfmt_misc`)", Dir, err)
		}
	}
	// binfmt_misc as a whole can be switched off (status 0), which
	// disables every handler however it is registered.
	status := filepath.Join(Dir, "status")
	if b, err := os.ReadFile(status); err == nil && strings.TrimSpace(string(b)) == "disabled" {
		if err := writeFile(status, "1"); err != nil {
			return fmt.Errorf("enabling binfmt_misc (%s): %w", status, err)
		}
	}
	return nil
}
