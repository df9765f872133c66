package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/executor"
)

// probeSource tries system calls that seccomp must refuse and prints the
// errno of each; busybox has no keyctl.
const probeSource = `package main

import (
	"fmt"
	"syscall"
	"unsafe"
)

func main() {
	try := func(name string, trap uintptr, a ...uintptr) {
		args := append(a, 0, 0, 0, 0, 0, 0)
		_, _, e := syscall.RawSyscall6(trap, args[0], args[1], args[2], args[3], args[4], args[5])
		fmt.Printf("%s %d\n", name, int(e))
	}
	try("unshare", syscall.SYS_UNSHARE, syscall.CLONE_NEWNS)
	try("keyctl", 250, 0, 0)
	src, tgt, fs := []byte("none\x00"), []byte("/tmp\x00"), []byte("tmpfs\x00")
	try("mount", syscall.SYS_MOUNT, uintptr(unsafe.Pointer(&src[0])), uintptr(unsafe.Pointer(&tgt[0])), uintptr(unsafe.Pointer(&fs[0])))
	try("setns", 308, 0, 0)
}
`

// buildProbe compiles probeSource, statically, to dst.
func buildProbe(t *testing.T, dst string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", dst, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, out)
	}
}

// treeDigest sums a directory's names, modes and contents: a host canary
// must come out of every build unchanged.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %d\n", p, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// stepCgroupsLeft lists the step cgroups below the test's own cgroups, in
// every hierarchy, whose kiln process is gone.
func stepCgroupsLeft(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		dirs := []string{filepath.Join("/sys/fs/cgroup", parts[2]), filepath.Join("/sys/fs/cgroup/unified", parts[2])}
		for _, c := range strings.Split(parts[1], ",") {
			if c != "" {
				dirs = append(dirs, filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(c, "name="), parts[2]))
			}
		}
		for _, d := range dirs {
			m, _ := filepath.Glob(filepath.Join(d, "kiln-step-*"))
			for _, cg := range m {
				// kiln-step-PID-RANDOM: other builds may be running on
				// this machine; a cgroup leaked if its kiln is gone.
				var pid int
				fmt.Sscanf(filepath.Base(cg), "kiln-step-%d-", &pid)
				if pid == 0 || syscall.Kill(pid, 0) == syscall.ESRCH {
					left = append(left, cg)
				}
			}
		}
	}
	return left
}

// nsLinks reads the namespace links of the test process.
func nsLinks(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ns := range []string{"mnt", "pid", "uts", "ipc", "net", "cgroup"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		out[ns] = l
	}
	return out
}

// runFlags matches the start of a RUN instruction up to its command.
var runFlags = regexp.MustCompile(`(?m)^RUN (--\S+ )*`)

// TestSandbox is the escape and hardening suite: each case builds a small
// Dockerfile whose RUN tries something the sandbox must forbid, or
// records what it sees, into /result; the test reads it from the
// exported root filesystem.
func TestSandbox(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	base := reg + "/library/busybox:latest"
	probe := filepath.Join(t.TempDir(), "probe")
	buildProbe(t, probe)
	probeBytes, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}

	// A host directory that every RUN tries to reach.
	canary := filepath.Join(t.TempDir(), "canary")
	if err := os.MkdirAll(filepath.Join(canary, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "sub", "keep"), []byte("host data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	canarySum := treeDigest(t, canary)
	// Tries the host's paths as they are, and through /proc's links to
	// other roots; none may reach the host.
	escape := fmt.Sprintf(`(echo pwned > %[1]s/sub/keep; echo pwned > /proc/1/root%[1]s/sub/keep; echo pwned > /proc/1/cwd%[1]s/sub/keep; rm -rf %[1]s) 2>/dev/null; `, canary)
	// Masked paths that this kernel has read as empty inside.
	var maskProbe, maskWant string
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/acpi", "/proc/scsi", "/sys/firmware"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			maskProbe += fmt.Sprintf("echo %s $(ls -A %[1]s | wc -l); ", p)
		} else {
			maskProbe += fmt.Sprintf("echo %s $(wc -c < %[1]s); ", p)
		}
		maskWant += p + " 0\n"
	}
	hostNS := nsLinks(t)

	tests := []struct {
		name       string
		dockerfile string // %[1]s is the base image
		files      map[string]string
		args       []string
		lacks      string // host features the build treats as missing (_KILN_TEST_HOST_LACKS)
		wantCode   int
		wantLog    []string
		check      func(t *testing.T, result string)
	}{
		{
			name:       "capabilities",
			dockerfile: "FROM %[1]s\nRUN grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status > /result\n",
			check: func(t *testing.T, r string) {
				want := "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n"
				if r != want {
					t.Errorf("capabilities:\n%s\nwant:\n%s", r, want)
				}
			},
		},
		{
			name:       "capabilities of a non-root user",
			dockerfile: "FROM %[1]s\nUSER nobody\nRUN grep -E '^Cap(Prm|Eff|Bnd):' /proc/self/status > /tmp/result\nUSER root\nRUN mv /tmp/result /result\n",
			check: func(t *testing.T, r string) {
				want := "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb\n"
				if r != want {
					t.Errorf("capabilities:\n%s\nwant:\n%s", r, want)
				}
			},
		},
		{
			name:       "seccomp refuses unshare, keyctl and mount",
			dockerfile: "FROM %[1]s\nCOPY --chmod=755 probe /probe\nRUN (grep Seccomp: /proc/self/status; /probe; unshare -m true 2>/dev/null || echo unshare refused; mkdir /mnt; mount -t tmpfs none /mnt 2>/dev/null || echo mount refused) > /result\n",
			files:      map[string]string{"probe": string(probeBytes)},
			check: func(t *testing.T, r string) {
				// keyctl is not in Docker's profile: ENOSYS, as a kernel
				// without it; what the profile names but refuses is EPERM.
				want := "Seccomp:\t2\nunshare 1\nkeyctl 38\nmount 1\nsetns 1\nunshare refused\nmount refused\n"
				if r != want {
					t.Errorf("got:\n%s\nwant:\n%s", r, want)
				}
			},
		},
		{
			name:       "masked and read-only paths",
			dockerfile: "FROM %[1]s\nRUN (" + maskProbe + "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo sys writable || echo sys read-only) > /result\n",
			check: func(t *testing.T, r string) {
				if want := maskWant + "sys read-only\n"; r != want {
					t.Errorf("got:\n%s\nwant:\n%s", r, want)
				}
			},
		},
		{
			name: "hostile base with symlinked /proc, /dev and /dev/null",
			// The hostile root is put together from busybox's binaries and
			// a context directory of symlinks.
			dockerfile: "FROM %[1]s AS bb\nFROM scratch\nCOPY --from=bb /bin /bin\nCOPY --from=bb /etc /etc\nCOPY hostile/ /\n" +
				"RUN (echo keys $(wc -c < /proc/keys); grep Seccomp: /proc/self/status; stat -c 'null %%t:%%T' /dev/null; readlink /proc; " +
				"echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo sys writable || echo sys read-only) > /result\n",
			files: map[string]string{
				"hostile/proc":         "symlink:../../../../../tmp/kiln-hostile-proc",
				"hostile/dev":          "symlink:/var/dev",
				"hostile/var/dev/null": "symlink:/etc/passwd",
				"hostile/sys":          "symlink:/tmp/kiln-hostile-sys",
				"hostile/tmp/.keep":    "",
			},
			check: func(t *testing.T, r string) {
				want := "keys 0\nSeccomp:\t2\nnull 1:3\n../../../../../tmp/kiln-hostile-proc\nsys read-only\n"
				if r != want {
					t.Errorf("got:\n%s\nwant:\n%s", r, want)
				}
				for _, p := range []string{"/tmp/kiln-hostile-proc", "/tmp/kiln-hostile-sys"} {
					if _, err := os.Lstat(p); err == nil {
						t.Errorf("%s created on the host", p)
						os.RemoveAll(p)
					}
				}
			},
		},
		{
			name:       "only fds 0, 1 and 2",
			dockerfile: "FROM %[1]s\nRUN ls /proc/self/fd | tr '\\n' ' ' > /result\n",
			check: func(t *testing.T, r string) {
				// 3 is ls's own listing of the directory.
				if r != "0 1 2 3 " {
					t.Errorf("open fds %q, want 0 1 2 (and ls's 3)", r)
				}
			},
		},
		{
			name:       "WORKDIR in /proc/self/fd",
			dockerfile: "FROM %[1]s\nWORKDIR /proc/self/fd/5\nRUN pwd > /result; ls > /listing\n",
			wantCode:   -1, // refused, or confined: either way not the host
			check: func(t *testing.T, r string) {
				t.Logf("result %q", r)
				if r != "" && r != "/proc/self/fd/5\n" {
					t.Errorf("working directory %q", r)
				}
			},
		},
		{
			name:       "PID 1 is kiln's init and reaps zombies",
			dockerfile: "FROM %[1]s\nRUN (tr '\\0' ' ' < /proc/1/cmdline; echo; sh -c 'true & true &'; sleep 0.3; echo zombies $(cat /proc/[0-9]*/stat | cut -d' ' -f3 | grep -c Z)) > /result\n",
			check: func(t *testing.T, r string) {
				if !strings.HasPrefix(r, "kiln __kiln-sandbox run \n") {
					t.Errorf("PID 1 is %q", strings.SplitN(r, "\n", 2)[0])
				}
				if !strings.Contains(r, "zombies 0\n") {
					t.Errorf("zombies left: %q", r)
				}
			},
		},
		{
			name:       "namespaces and hostname",
			dockerfile: "FROM %[1]s\nRUN (for ns in mnt pid uts ipc net cgroup; do echo $ns $(readlink /proc/self/ns/$ns); done; hostname) > /result\n",
			check: func(t *testing.T, r string) {
				for _, line := range strings.Split(strings.TrimSpace(r), "\n") {
					ns, link, ok := strings.Cut(line, " ")
					if !ok {
						// The UTS namespace is checked to be the step's own
						// above; the host may be a BuildKit sandbox itself.
						if line != "buildkitsandbox" {
							t.Errorf("hostname %q, want buildkitsandbox", line)
						}
						continue
					}
					if link == hostNS[ns] {
						t.Errorf("%s namespace is the host's: %s", ns, link)
					}
				}
			},
		},
		{
			name:       "network none has only lo",
			dockerfile: "FROM %[1]s\nRUN (ls /sys/class/net; cat /sys/class/net/lo/operstate; readlink /proc/self/ns/net) > /result\n",
			args:       []string{"--network=none"},
			check: func(t *testing.T, r string) {
				lines := strings.Split(strings.TrimSpace(r), "\n")
				if len(lines) != 3 || lines[0] != "lo" || lines[2] == hostNS["net"] {
					t.Errorf("got %q, want only lo in a network namespace of its own", r)
				}
			},
		},
		{
			name:       "out of memory",
			dockerfile: "FROM %[1]s\nRUN tail /dev/zero\n",
			args:       []string{"--memory", "64m"},
			wantCode:   1,
			// The planner prefixes "RUN at line 2 was killed: ".
			wantLog: []string{"out of memory (limit 64 MiB)"},
		},
		{
			name:       "pids limit",
			dockerfile: "FROM %[1]s\nRUN i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; wait\n",
			args:       []string{"--pids-limit", "50"},
			wantCode:   1,
			wantLog:    []string{"can't fork"},
		},
		{
			name: "fork bomb",
			// The outer shell waits with builtins only: a fork of its
			// own could meet the limit the bomb keeps full.
			dockerfile: "FROM %[1]s\nRUN b() { b | b & }; b; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo survived > /result\n",
			args:       []string{"--pids-limit", "200"},
			check: func(t *testing.T, r string) {
				if r != "survived\n" {
					t.Errorf("got %q", r)
				}
			},
		},
		{
			name:       "step timeout",
			dockerfile: "FROM %[1]s\nRUN sleep 60\n",
			args:       []string{"--step-timeout", "1s"},
			wantCode:   1,
			wantLog:    []string{"timed out after 1s"},
		},
		{
			name:       "no cgroup: RUN refused, naming the entitlement",
			dockerfile: "FROM %[1]s\nRUN true\n",
			lacks:      "cgroup",
			wantCode:   1,
			wantLog:    []string{"need a cgroup of their own", "--allow security.nocgroup"},
		},
		{
			name:       "no cgroup, allowed: no CAP_MKNOD, no device nodes",
			dockerfile: "FROM %[1]s\nRUN (grep CapBnd /proc/self/status; mknod /tmp/n c 1 7 2>/dev/null && echo mknod ok || echo mknod refused; echo x > /dev/null && echo null ok) > /result\n",
			args:       []string{"--allow", "security.nocgroup"},
			lacks:      "cgroup",
			wantLog:    []string{"run without a cgroup (--allow security.nocgroup)"},
			check: func(t *testing.T, r string) {
				if want := "CapBnd:\t00000000a00425fb\nmknod refused\nnull ok\n"; r != want {
					t.Errorf("got:\n%s\nwant:\n%s", r, want)
				}
			},
		},
		{
			name:       "no seccomp table: RUN refused, naming the entitlement",
			dockerfile: "FROM %[1]s\nRUN true\n",
			lacks:      "seccomp",
			wantCode:   1,
			wantLog:    []string{"no system call table", "--allow security.noseccomp"},
		},
		{
			name:       "no seccomp table, allowed",
			dockerfile: "FROM %[1]s\nRUN grep Seccomp: /proc/self/status > /result\n",
			args:       []string{"--allow", "security.noseccomp"},
			lacks:      "seccomp",
			check: func(t *testing.T, r string) {
				if r != "Seccomp:\t0\n" {
					t.Errorf("got %q", r)
				}
			},
		},
		{
			name:       "insecure needs the entitlement",
			dockerfile: "FROM %[1]s\nRUN --security=insecure true\n",
			wantCode:   1,
			wantLog:    []string{"RUN --security=insecure needs --allow security.insecure"},
		},
		{
			name:       "insecure with the entitlement",
			dockerfile: "FROM %[1]s\nRUN --security=insecure grep -E '^(CapBnd|Seccomp):' /proc/self/status > /result\n",
			args:       []string{"--allow", "security.insecure"},
			check: func(t *testing.T, r string) {
				if strings.Contains(r, "a80425fb") || !strings.Contains(r, "Seccomp:\t0") {
					t.Errorf("insecure step still hardened: %q", r)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("_KILN_TEST_HOST_LACKS", tt.lacks)
			ctxDir := t.TempDir()
			df := fmt.Sprintf(tt.dockerfile, base)
			// Every RUN first tries to reach the canary.
			df = runFlags.ReplaceAllStringFunc(df, func(run string) string { return run + escape })
			writeContext(t, ctxDir, df, tt.files)
			// Not t.TempDir: a comma in the test name would split -o.
			outDir, err := os.MkdirTemp("", "kiln-sandbox-out-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(outDir)
			out := filepath.Join(outDir, "out")
			args := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=local,dest=" + out}, tt.args...)
			start := time.Now()
			log, code := kiln(t, append(args, ctxDir)...)
			if d := time.Since(start); d > 90*time.Second {
				t.Errorf("build took %v", d)
			}
			checkNoLeaks(t, root)
			if left := stepCgroupsLeft(t); len(left) > 0 {
				t.Errorf("cgroups left: %v", left)
			}
			if sum := treeDigest(t, canary); sum != canarySum {
				t.Fatalf("host canary changed by the build")
			}
			if tt.wantCode >= 0 && code != tt.wantCode {
				t.Fatalf("exit code %d, want %d:\n%s", code, tt.wantCode, log)
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(log, w) {
					t.Errorf("output lacks %q:\n%s", w, log)
				}
			}
			if strings.Contains(log, "panic") {
				t.Errorf("kiln panicked:\n%s", log)
			}
			if tt.check != nil {
				var result []byte
				if code == 0 {
					result, err = os.ReadFile(filepath.Join(out, "result"))
					if err != nil {
						t.Fatalf("reading the result: %v\n%s", err, log)
					}
				}
				if testing.Verbose() {
					t.Logf("exit code %d:\n%s", code, log)
				}
				tt.check(t, string(result))
			}
		})
	}
}

// writeContext writes the Dockerfile and files ("symlink:TARGET" makes a
// symlink) into dir.
func writeContext(t *testing.T, dir, dockerfile string, files map[string]string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "symlink:"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestSandboxInterrupt stops a build mid-RUN with SIGINT (SIGTERM): kiln
// must kill the step, remove its mounts, cgroup and temporary
// directories, and exit 130 (143).
func TestSandboxInterrupt(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	for _, sig := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(sig.sig.String(), func(t *testing.T) {
			root := t.TempDir()
			ctxDir := t.TempDir()
			marker := fmt.Sprint(3000000 + time.Now().UnixNano()%1000000)
			writeContext(t, ctxDir, fmt.Sprintf("FROM %s/library/busybox:latest\nRUN sleep %s & sleep %s\n", reg, marker, marker), nil)
			cmd := exec.Command(kilnBin, "build", "--root", root, "--progress=plain", ctxDir)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for len(processesWith(t, "sleep "+marker)) < 2 {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("the step did not start:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := cmd.Process.Signal(sig.sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("kiln did not exit after %v:\n%s", sig.sig, out.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != sig.code {
				t.Errorf("exit code %d, want %d:\n%s", code, sig.code, out.String())
			}
			if left := processesWith(t, "sleep "+marker); len(left) > 0 {
				t.Errorf("step processes left: %v", left)
			}
			checkNoLeaks(t, root)
			if left := stepCgroupsLeft(t); len(left) > 0 {
				t.Errorf("cgroups left: %v", left)
			}
			// The store's scratch space holds the steps' upper, work and
			// mount point directories.
			if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) > 0 {
				var names []string
				for _, e := range left {
					names = append(names, e.Name())
				}
				t.Errorf("temporary directories left in the store: %v", names)
			}
			// The store stays usable.
			again := t.TempDir()
			writeContext(t, again, fmt.Sprintf("FROM %s/library/busybox:latest\nRUN echo ok > /ok\n", reg), nil)
			if log, code := kiln(t, "build", "--root", root, "--progress=plain", again); code != 0 {
				t.Errorf("building with the store after the interrupt: exit code %d\n%s", code, log)
			}
		})
	}
}

// processesWith returns the pids whose command line contains s.
func processesWith(t *testing.T, s string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(bytes.ReplaceAll(b, []byte{0}, []byte{' '}), []byte(s)) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "64m", want: 64 << 20},
		{in: "64M", want: 64 << 20},
		{in: "64MB", want: 64 << 20},
		{in: "64MiB", want: 64 << 20},
		{in: "1g", want: 1 << 30},
		{in: "1.5g", want: 3 << 29},
		{in: "512k", want: 512 << 10},
		{in: "4096", want: 4096},
		{in: "100b", want: 100},
		{in: "", bad: true},
		{in: "m", bad: true},
		{in: "12x", bad: true},
		{in: "-1m", bad: true},
		{in: "1e30g", bad: true},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseSize(%q) = %d, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestSandboxFlags(t *testing.T) {
	tests := []struct {
		args    []string
		check   func(t *testing.T, s executor.Sandbox)
		wantErr string
	}{
		{args: nil, check: func(t *testing.T, s executor.Sandbox) {
			if s.PidsLimit != 0 || s.Limited() || s.StepTimeout != 0 {
				t.Errorf("defaults %+v", s)
			}
		}},
		{args: []string{"--memory", "64m", "--memory-swap", "-1", "--cpus", "1.5", "--cpu-shares", "512", "--pids-limit", "100", "--blkio-weight", "300", "--step-timeout", "10m", "--allow", "security.insecure"},
			check: func(t *testing.T, s executor.Sandbox) {
				if s.Memory != 64<<20 || s.MemorySwap != -1 || s.CPUs != 1.5 || s.CPUShares != 512 || s.PidsLimit != 100 || s.BlkioWeight != 300 || s.StepTimeout != 10*time.Minute || !s.Allows("security.insecure") {
					t.Errorf("settings %+v", s)
				}
			}},
		{args: []string{"--memory", "lots"}, wantErr: "--memory lots: want a size"},
		{args: []string{"--memory", "1m"}, wantErr: "below the minimum"},
		{args: []string{"--memory-swap", "1g"}, wantErr: "needs a memory limit"},
		{args: []string{"--cpus", "two"}, wantErr: "--cpus two"},
		{args: []string{"--pids-limit", "0"}, wantErr: "--pids-limit 0"},
		{args: []string{"--blkio-weight", "5"}, wantErr: "between 10 and 1000"},
		{args: []string{"--userns", "auto"}, wantErr: "not supported"},
		{args: []string{"--allow", "device"}, wantErr: "unknown entitlement"},
		{args: []string{"--allow", "network.host"}, check: func(t *testing.T, s executor.Sandbox) {
			if !s.Allows(executor.EntitlementNetworkHost) {
				t.Errorf("settings %+v", s)
			}
		}},
		{args: []string{"--allow", "security.nocgroup", "--allow", "security.noseccomp"}, check: func(t *testing.T, s executor.Sandbox) {
			if !s.Allows(executor.EntitlementNoCgroup) || !s.Allows(executor.EntitlementNoSeccomp) {
				t.Errorf("entitlements %v", s.Allow)
			}
		}},
		{args: []string{"--allow", "security.nodevices"}, wantErr: "security.nocgroup, security.noseccomp"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := pflag.NewFlagSet("build", pflag.ContinueOnError)
			get := addSandboxFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			s, err := get()
			if tt.wantErr != "" {
				var ue *usageError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ue) {
					t.Fatalf("err = %v, want a usage error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s)
		})
	}
}
