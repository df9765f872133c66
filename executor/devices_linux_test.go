package executor

import (
	"fmt"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/executor/devices"
)

// TestDeviceFilter attaches the cgroup v2 device filter to a cgroup of the
// unified hierarchy (present on v2 and hybrid hosts alike) and checks what
// a root shell in it may open.
func TestDeviceFilter(t *testing.T) {
	needRoot(t)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		testutil.SkipHost(t, "needs busybox")
	}
	dir := testV2Cgroup(t, "devtest")
	if err := devices.AttachFilter(dir, devices.Default); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	// A device outside the allow-list that root can read here without
	// the filter: a block device if the host allows, else /dev/kmsg.
	var candidates []string
	devs, _ := os.ReadDir("/sys/dev/block")
	for _, d := range devs {
		candidates = append(candidates, "b "+strings.Replace(d.Name(), ":", " ", 1))
	}
	candidates = append(candidates, "c 1 11")
	dev := ""
	for _, c := range candidates {
		probe := filepath.Join(tmp, "probe")
		os.Remove(probe)
		out, err := exec.Command(bb, "sh", "-c", fmt.Sprintf("%s mknod %s %s && %[1]s head -c 1 %[2]s | %[1]s wc -c", bb, probe, c)).Output()
		if err == nil && string(out) == "1\n" {
			dev = c
			break
		}
	}
	if dev == "" {
		testutil.SkipHost(t, "no device outside the allow-list is readable here to test with")
	}
	t.Logf("testing with %s", dev)
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs || exit 9
bb=%s
$bb head -c 1 /dev/zero | $bb wc -c
echo x > /dev/null && echo null ok
$bb mknod %[3]s/dev %[4]s && echo mknod ok
$bb head -c 1 %[3]s/dev 2>&1; true
`, dir, bb, tmp, dev)
	out, err := exec.Command(bb, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := string(out)
	for _, want := range []string{"1\n", "null ok\n", "mknod ok\n", "dev: Operation not permitted\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
