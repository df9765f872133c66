package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	needRootless(t, "unshare", "setpriv")
	if _, err := os.Stat("/sys/firmware"); err != nil {
		testutil.SkipHostf(t, "no /sys/firmware to mask: %v", err)
	}
	name, uid, gid := throwawayUser(t)
	dir := userTree(t, "kiln-masks-", uid, gid)
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
				"env HOME=" + home + " USER=" + name + " KILN_SYNC=wait " + bin + " build --root " + dir("root"+strconv.Itoa(i)) + " --progress=plain " + tc.network + " " + ctxDir
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
