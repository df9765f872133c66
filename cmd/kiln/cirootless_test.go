package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// TestRootlessUnderMasks backs what docs/ci.md and
// docs/ci/kubernetes-job.yaml say a rootless kiln needs in a pod: a
// container runtime's masks over /proc (read-only /proc/sys …) make the
// kernel refuse the fresh /proc of every RUN step in kiln's user
// namespace, hence procMount: Unmasked; masks over /sys (/sys/firmware …)
// refuse the sysfs of --network=none, while --network=host binds the
// pod's own /sys and works.
func TestRootlessUnderMasks(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"newuidmap", "newgidmap", "unshare", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipHostf(t, "needs %s (packages uidmap, util-linux): %v", tool, err)
		}
	}
	if v, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(v)) == "0" {
		testutil.SkipHost(t, "the kernel allows user namespaces to root only (kernel.unprivileged_userns_clone=0)")
	}
	var u syscall.Utsname
	must(t, syscall.Uname(&u))
	var release []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		release = append(release, byte(c))
	}
	var major, minor int
	if _, err := fmt.Sscanf(string(release), "%d.%d", &major, &minor); err == nil && (major < 5 || major == 5 && minor < 11) {
		testutil.SkipHostf(t, "kernel %s: overlayfs in a user namespace needs Linux 5.11", release)
	}
	if _, err := os.Stat("/sys/firmware"); err != nil {
		testutil.SkipHostf(t, "no /sys/firmware to mask: %v", err)
	}
	name, uid, gid := throwawayUser(t)
	top, err := os.MkdirTemp("", "kiln-masks-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(top) })
	must(t, os.Chmod(top, 0o755))
	dir := func(n string) string {
		p := filepath.Join(top, n)
		must(t, os.Mkdir(p, 0o755))
		must(t, os.Chown(p, uid, gid))
		return p
	}
	bin, home, ctxDir := filepath.Join(dir("bin"), "kiln"), dir("home"), dir("ctx")
	copyFile(t, kilnBin, bin, 0o755)
	reg := registryWithBases(t)
	writeFile(t, filepath.Join(ctxDir, "Dockerfile"), "FROM "+reg+"/library/busybox:latest\nRUN ls /proc/1 /sys > /seen\n")

	const (
		maskProc = "mount -o bind,ro /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
		maskSys  = "mount -t tmpfs -o ro tmpfs /sys/firmware && "
	)
	for i, tc := range []struct {
		name, masks, network string
		wantErr              string // "" builds
	}{
		{"unmasked, network none", "", "--network=none", ""},
		{"unmasked, pod network", "", "--network=host --allow=network.host", ""},
		{"proc masked", maskProc, "--network=host --allow=network.host", "mounting proc"},
		{"sys masked, network none", maskSys, "--network=none", "mounting sysfs"},
		{"sys masked, pod network", maskSys, "--network=host --allow=network.host", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The masks live in a mount namespace of their own, as a
			// container's do; kiln runs in it as the user.
			script := tc.masks + "exec setpriv --reuid=" + strconv.Itoa(uid) + " --regid=" + strconv.Itoa(gid) + " --init-groups " +
				"env HOME=" + home + " USER=" + name + " " + bin + " build --root " + dir("root"+strconv.Itoa(i)) + " --progress=plain " + tc.network + " " + ctxDir
			out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script).CombinedOutput()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("build: %v\n%s", err, out)
			case tc.wantErr != "" && (err == nil || !strings.Contains(string(out), tc.wantErr)):
				t.Fatalf("build: %v, want a failure %q\n%s", err, tc.wantErr, out)
			}
		})
	}
}
