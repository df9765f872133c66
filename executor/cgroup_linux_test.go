package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/executor/cgroups"
	"github.com/kiln-build/kiln/executor/stepinit"
)

// needCgroups skips when this host gives kiln no cgroups.
func needCgroups(t *testing.T) *cgroups.Hierarchy {
	t.Helper()
	needRoot(t)
	h, err := cgroups.Host()
	if err != nil {
		testutil.SkipHostf(t, "needs cgroups: %v", err)
	}
	return h
}

// assertNoStepCgroups fails when a step's cgroup outlived it.
func assertNoStepCgroups(t *testing.T, h *cgroups.Hierarchy) {
	t.Helper()
	// removed in the background: as kiln does before it exits
	if err := WaitCgroupsRemoved(); err != nil {
		t.Error(err)
	}
	for c, dir := range h.Dirs {
		left, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("kiln-step-%d-*", os.Getpid())))
		if len(left) > 0 {
			t.Errorf("cgroups left in %s hierarchy: %v", c, left)
		}
	}
}

func TestRunLimits(t *testing.T) {
	h := needCgroups(t)
	base := busyboxRootfs(t)
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	tests := []struct {
		name    string
		sandbox Sandbox
		mounts  []Mount
		script  string
		check   func(t *testing.T, out string, err error)
	}{
		{
			name:    "out of memory",
			sandbox: Sandbox{Memory: 64 << 20},
			script:  "tail /dev/zero",
			check: func(t *testing.T, out string, err error) {
				var ee *ExitError
				if !errors.As(err, &ee) || !ee.Killed || ee.Reason != "out of memory (limit 64 MiB)" {
					t.Fatalf("err = %#v, want Killed: out of memory (limit 64 MiB)", err)
				}
				if err.Error() != "killed: out of memory (limit 64 MiB)" {
					t.Errorf("message %q", err)
				}
			},
		},
		{
			name:    "pids limit",
			sandbox: Sandbox{PidsLimit: 20},
			script:  "i=0; while [ $i -lt 50 ]; do sleep 60 & i=$((i+1)); done; wait",
			check: func(t *testing.T, out string, err error) {
				var ee *ExitError
				if !errors.As(err, &ee) || ee.PidsLimit != 20 {
					t.Fatalf("err = %#v, want PidsLimit 20", err)
				}
				if !strings.Contains(err.Error(), "limit of 20 processes") {
					t.Errorf("message %q", err)
				}
			},
		},
		{
			name:    "fork bomb is contained",
			sandbox: Sandbox{PidsLimit: 64},
			script:  "b() { b | b & }; b; sleep 1; echo survived",
			check: func(t *testing.T, out string, err error) {
				if err != nil || out != "survived\n" {
					t.Errorf("err %v, output %q", err, out)
				}
			},
		},
		{
			name:    "step timeout",
			sandbox: Sandbox{StepTimeout: 300 * time.Millisecond},
			script:  "sleep 30",
			check: func(t *testing.T, out string, err error) {
				var ee *ExitError
				if !errors.As(err, &ee) || !ee.Killed || ee.Reason != "timed out after 300ms (--step-timeout)" {
					t.Fatalf("err = %#v, want a timeout", err)
				}
			},
		},
		{
			name:   "block devices refused",
			script: "mknod /tmp/blk b 7 0 && head -c 1 /tmp/blk 2>&1; mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem 2>&1; head -c 1 /dev/zero | wc -c",
			check: func(t *testing.T, out string, err error) {
				if err != nil {
					t.Fatal(err)
				}
				if strings.Count(out, "Operation not permitted") != 2 || !strings.HasSuffix(out, "1\n") {
					t.Errorf("output %q: want both devices refused, /dev/zero usable", out)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := tt.script
			rootfs := newRootfs(t, base)
			var out, errOut bytes.Buffer
			start := time.Now()
			err := Run(context.Background(), RunSpec{
				Rootfs: rootfs, Env: []string{testPath}, Args: sh(script),
				Sandbox: tt.sandbox, Mounts: tt.mounts, Stdout: &out, Stderr: &errOut,
			})
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
			if err != nil {
				t.Logf("stderr: %.500s", errOut.String())
			}
			tt.check(t, out.String(), err)
			assertStepGone(t, rootfs.Upper)
			assertNoStepCgroups(t, h)
		})
	}
}

func TestSandboxCheck(t *testing.T) {
	tests := []struct {
		name string
		s    Sandbox
		want string // "" for valid
	}{
		{"zero", Sandbox{}, ""},
		{"all set", Sandbox{Memory: 64 << 20, MemorySwap: -1, CPUShares: 512, CPUs: 1.5, PidsLimit: 100, BlkioWeight: 500, StepTimeout: time.Minute, Allow: []string{EntitlementInsecure}}, ""},
		{"tiny memory", Sandbox{Memory: 1 << 20}, "below the minimum of 6 MiB"},
		{"swap without memory", Sandbox{MemorySwap: 1 << 30}, "needs a memory limit"},
		{"swap below memory", Sandbox{Memory: 1 << 30, MemorySwap: 64 << 20}, "below the memory limit 1 GiB"},
		{"negative cpus", Sandbox{CPUs: -1}, "must not be negative"},
		{"blkio weight", Sandbox{BlkioWeight: 5}, "between 10 and 1000"},
		{"pids", Sandbox{PidsLimit: -2}, "use -1 for unlimited"},
		{"userns", Sandbox{UserNS: "auto"}, "not supported"},
		{"entitlement", Sandbox{Allow: []string{"device"}}, "unknown entitlement"},
		{"network.host", Sandbox{Allow: []string{EntitlementNetworkHost}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Check()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Check() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{64 << 20: "64 MiB", 2 << 30: "2 GiB", 1536 << 10: "1536 KiB", 1000: "1000 bytes", 1 << 40: "1 TiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestRunCgroup checks the step's cgroup from the host while the command
// runs: the limits are set, the command is in it, and it sees the cgroup
// as the root of its own cgroup namespace.
func TestRunCgroup(t *testing.T) {
	h := needCgroups(t)
	base := busyboxRootfs(t)
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), RunSpec{
			Rootfs: newRootfs(t, base), Env: []string{testPath},
			Args:    []string{"/bin/sh", "-c", "cat /proc/self/cgroup; sleep 2"},
			Sandbox: Sandbox{Memory: 100 << 20, CPUs: 0.5, CPUShares: 512},
			Stdout:  &out,
		})
	}()
	files := map[string]string{"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us"}
	want := map[string]string{"memory": "104857600", "pids": "4096", "cpu": "50000"}
	if h.V2 {
		files = map[string]string{"": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}
		want = map[string]string{"": "104857600", "pids": "4096", "cpu": "50000 100000"}
	}
	var dir string
	deadline := time.Now().Add(5 * time.Second)
	for dir == "" && time.Now().Before(deadline) {
		procsDir := h.Dirs["pids"]
		if h.V2 {
			procsDir = h.Dirs[""]
		}
		m, _ := filepath.Glob(filepath.Join(procsDir, fmt.Sprintf("kiln-step-%d-*", os.Getpid())))
		for _, d := range m {
			if b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs")); len(bytes.Fields(b)) >= 2 {
				dir = filepath.Base(d)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if dir == "" {
		t.Fatal("no step cgroup holding the init and the command")
	}
	for c, file := range files {
		parent := h.Dirs[c]
		if h.V2 {
			parent = h.Dirs[""]
		}
		b, err := os.ReadFile(filepath.Join(parent, dir, file))
		if err != nil {
			t.Errorf("reading %s: %v", file, err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != want[c] {
			t.Errorf("%s = %q, want %q", file, got, want[c])
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasSuffix(line, ":/") {
			t.Errorf("the command sees cgroup %q, want / in its own cgroup namespace", line)
		}
	}
	assertNoStepCgroups(t, h)
}

// TestRunBornInCgroup starts a sandbox straight into a cgroup v2 directory
// (CLONE_INTO_CGROUP), using the unified hierarchy that v2 and hybrid
// hosts both have; the v2 controllers are not needed for that.
func TestRunBornInCgroup(t *testing.T) {
	needRoot(t)
	dir := testV2Cgroup(t, "borntest")
	cg := &stepCgroup{Step: cgroups.OpenV2(dir)}
	base := busyboxRootfs(t)
	rootfs := newRootfs(t, base)
	cs := childSpec{Spec: stepinit.Spec{Mode: "run", Rootfs: stepinit.Rootfs(rootfs), Args: []string{"/bin/sleep", "1"}, Env: []string{testPath}, Cwd: "/", Hostname: defaultHostname}}
	done := make(chan error, 1)
	go func() {
		_, err := runChild(context.Background(), cs, runCloneflags, nil, nil, cg)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for n < 2 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		n = len(bytes.Fields(b))
		time.Sleep(10 * time.Millisecond)
	}
	if n < 2 {
		t.Errorf("%d processes in the cgroup, want the init and the command", n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// testV2Cgroup makes a cgroup v2 below kiln's own for a test, removed at
// its end; it skips the test where there is no usable v2 hierarchy.
func testV2Cgroup(t *testing.T, name string) string {
	t.Helper()
	own, err := cgroups.UnifiedDir()
	if err != nil {
		testutil.SkipHost(t, err.Error())
	}
	dir := filepath.Join(own, fmt.Sprintf("kiln-step-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		testutil.SkipHostf(t, "cannot create a cgroup v2: %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	return dir
}
