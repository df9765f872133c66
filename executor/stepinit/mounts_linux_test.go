package stepinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMaskedPathsInRoot: masked paths resolve inside the root whatever
// the image plants, and never to a symlink that a mount would follow.
func TestMaskedPathsInRoot(t *testing.T) {
	host := t.TempDir()
	canary := filepath.Join(host, "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(host, "root")
	for _, d := range []string{"realproc/fs", "sys/devices/x", "inside"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "realproc/kcore"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"proc":                 "/realproc",
		"realproc/acpi":        "/inside",          // taken inside the root
		"realproc/keys":        canary,             // an absolute host path
		"realproc/scsi":        "../../../canary",  // climbing out
		"sys/devices/virtual":  "/../../canary",    // below a deeper path
		"realproc/timer_stats": "timer_stats_gone", // dangling
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"/proc/kcore", "/proc/fs", "/proc/acpi", "/proc/keys", "/proc/scsi", "/proc/timer_stats",
		"/sys/devices/virtual/powercap", "/sys/firmware", "/proc/sys"} {
		got, err := inRoot(root, p)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err = unix.Lstat(got, &st); err != nil && err != unix.ENOENT {
			t.Fatalf("%s: %v", p, err)
		}
		if rel, err := filepath.Rel(root, got); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Errorf("%s resolved outside the root: %s", p, got)
		}
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			t.Errorf("%s: %s is a symlink, which a mount would follow", p, got)
		}
	}
	if ents, _ := os.ReadDir(canary); len(ents) != 0 {
		t.Fatalf("host canary changed: %v", ents)
	}
}
