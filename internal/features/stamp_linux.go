package features

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
)

// stamp names this boot and this kiln: the kernel's boot id, kiln's
// version and commit as built, and its binary's size, time and inode, so
// that a kiln rebuilt from a modified tree asks again.
func stamp() (string, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("reading the boot id: %w", err)
	}
	var b strings.Builder
	b.WriteString(strings.TrimSpace(string(boot)))
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.WriteString(" " + bi.Main.Version)
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.modified" {
				b.WriteString(" " + s.Value)
			}
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return "", fmt.Errorf("reading kiln's binary: %w", err)
	}
	fmt.Fprintf(&b, " %d:%d:%d.%d", st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
	return b.String(), nil
}
