package stepinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStubPlan: the plan copies the image's directories on the way to a
// missing mount point, makeStubs recreates them exactly, and a plan made
// through a symlink is not offered for reuse.
func TestStubPlan(t *testing.T) {
	view := t.TempDir()
	etc := filepath.Join(view, "etc")
	if err := os.Mkdir(etc, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(etc, 12, 34); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"proc", "dev"} {
		if err := os.Mkdir(filepath.Join(view, d), 0o555); err != nil {
			t.Fatal(err)
		}
	}
	when := time.Unix(1700000000, 123)
	if err := os.Chtimes(etc, when, when); err != nil {
		t.Fatal(err)
	}
	mounts := []rootMount{
		{target: "/proc", dir: true}, {target: "/dev", dir: true}, {target: "/sys", dir: true},
		{target: "/etc/hosts"}, {target: "/etc/resolv.conf"}, {target: "/run/cache/x", dir: true},
	}
	plan, reusable, err := planStubs(view, mounts)
	if err != nil {
		t.Fatal(err)
	}
	if !reusable || !plan.reusable(mounts) || plan.reusable(mounts[:5]) {
		t.Fatalf("plan reusable %v for its mounts %v, for others %v", reusable, plan.reusable(mounts), plan.reusable(mounts[:5]))
	}
	var rels []string
	for _, s := range plan.Stubs {
		rels = append(rels, s.Rel)
	}
	want := "sys etc etc/hosts etc/resolv.conf run run/cache run/cache/x"
	if got := strings.Join(rels, " "); got != want {
		t.Fatalf("stubs %q, want %q", got, want)
	}
	layer := t.TempDir()
	if err := makeStubs(layer, plan.Stubs); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(layer, "etc"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o750 || st.Uid != 12 || st.Gid != 34 || st.Mtim.Nano() != when.UnixNano() {
		t.Errorf("stub /etc: mode %o, owner %d:%d, mtime %d; want the image's 750, 12:34, %d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Nano(), when.UnixNano())
	}
	if fi, err := os.Lstat(filepath.Join(layer, "etc/hosts")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("stub /etc/hosts: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(layer, "run/cache/x")); err != nil || !fi.IsDir() {
		t.Errorf("stub /run/cache/x: %v", err)
	}

	// /etc through a symlink: the plan stands for this step only.
	linked := t.TempDir()
	if err := os.Mkdir(filepath.Join(linked, "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr", filepath.Join(linked, "etc")); err != nil {
		t.Fatal(err)
	}
	if _, reusable, err := planStubs(linked, mounts); err != nil || reusable {
		t.Errorf("plan through a symlink: reusable %v (%v)", reusable, err)
	}
}
