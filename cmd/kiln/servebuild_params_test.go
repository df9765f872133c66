package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// serveDocker runs `docker -H host build ARGS .` in dir with the classic
// builder; it returns the output and the exit code.
func serveDocker(t *testing.T, host, dir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("docker", append(append([]string{"-H", host, "build"}, args...), ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("running docker: %v", err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// TestServeBuildParams: docker build's --memory, --shm-size, --add-host,
// --cpu-quota, --cpu-shares and --cache-from reach the build through kiln
// serve as kiln build's flags; a value kiln cannot honour is a 400 naming
// the parameter.
func TestServeBuildParams(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	_, proxy, base := cacheRegistry(t) // sets the registry environment kiln serve inherits
	dir := t.TempDir()
	s, _, sock := serveBusybox(t, dir)
	host := "unix://" + sock

	t.Run("memory", func(t *testing.T) {
		ctxDir := t.TempDir()
		writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM test/busybox:1\nRUN tail /dev/zero\n"})
		out, code := serveDocker(t, host, ctxDir, "--network", "none", "--memory", "64m", "--memory-swap", "64m")
		if code != 1 || !strings.Contains(out, "out of memory (limit 64 MiB)") {
			t.Errorf("docker build --memory 64m of a RUN eating memory: exit %d, want 1 naming the limit:\n%s\nserver:\n%s", code, out, s.log)
		}
	})

	t.Run("shm, hosts, cpu", func(t *testing.T) {
		ctxDir := t.TempDir()
		m := "2.9" + marker()[4:]
		writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM test/busybox:1\n" +
			"RUN grep db /etc/hosts; df -k /dev/shm | tail -n 1 | awk '{print \"shm\", $2}'; sleep " + m + "\n"})
		cmd := exec.Command("docker", "-H", host, "build", "--network", "none", "--shm-size", "96m", "--add-host", "db:10.1.2.3",
			"--cpu-quota", "50000", "--cpu-shares", "512", ".")
		cmd.Dir = ctxDir
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitRunning(t, "sleep "+m, s.log)
		quota, shares := cpuLimits(t, "sleep "+m)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("docker build: %v:\n%s\nserver:\n%s", err, out.String(), s.log)
		}
		for _, want := range []string{"10.1.2.3\tdb", "shm 98304"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("the RUN step's output has no %q:\n%s", want, out.String())
			}
		}
		if quota != "50000" || (shares != "512" && shares != "") {
			t.Errorf("the RUN step's cgroup: CPU quota %q, shares %q; want 50000 of 100000 microseconds, 512 shares", quota, shares)
		}
	})

	t.Run("cache-from", func(t *testing.T) {
		// an image pushed with its inline cache, built elsewhere
		ctxDir := registryContext(t, "FROM "+base+"\nRUN echo built > /built\nCOPY greeting /greeting\n")
		app := proxy.Host + "/team/app:servecache"
		if out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", app, "--push", "--cache-to", "type=inline", ctxDir); code != 0 {
			t.Fatalf("kiln build --push: %s", out)
		}
		// the default network, as the cache's: a RUN's network is in its key
		out, code := serveDocker(t, host, ctxDir, "--cache-from", app)
		if code != 0 {
			t.Fatalf("docker build --cache-from: exit %d:\n%s\nserver:\n%s", code, out, s.log)
		}
		allCached(t, out)
	})

	t.Run("refused", func(t *testing.T) {
		c := unixClient(sock)
		good := tarOf(t, testutil.File("Dockerfile", 0o644, "FROM scratch\n"))
		for _, tc := range []struct{ query, want string }{
			{"memory=-5", "memory"},
			{"memory=lots", "memory"},
			{"memswap=100000000", "memswap"},
			{"cpuquota=10", "cpuquota"},
			{"cpuquota=50000&cpuperiod=10", "cpuperiod"},
			{"cpusetcpus=0-1", "cpusetcpus"},
			{"shmsize=-1", "shmsize"},
			{"extrahosts=nocolon", "extrahosts"},
			{"cachefrom=notjson", "cachefrom"},
		} {
			code, body := postBuild(t, c, tc.query, bytes.NewReader(good))
			var msg struct{ Message string }
			if code != 400 || json.Unmarshal([]byte(body), &msg) != nil || !strings.Contains(msg.Message, "invalid query parameter "+tc.want) {
				t.Errorf("%s: answer %d %s; want 400 naming %s", tc.query, code, body, tc.want)
			}
		}
		ctxDir := t.TempDir()
		writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM scratch\n"})
		out, code := serveDocker(t, host, ctxDir, "--cpuset-cpus", "0")
		if code == 0 || !strings.Contains(out, "cpusetcpus") {
			t.Errorf("docker build --cpuset-cpus: exit %d, want non-zero naming cpusetcpus:\n%s", code, out)
		}
	})
}

// cpuLimits reads the CPU quota (microseconds per 100ms period) and, on
// cgroup v1, the CPU shares of the cgroup of the process with cmdline
// cmd.
func cpuLimits(t *testing.T, cmd string) (quota, shares string) {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("reading the step's cgroup: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), cmd) {
			continue
		}
		cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			t.Fatal(err)
		}
		var v2 string
		for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
			f := strings.SplitN(l, ":", 3)
			if len(f) != 3 {
				continue
			}
			if f[1] == "" {
				v2 = f[2]
			}
			for _, c := range strings.Split(f[1], ",") {
				if c == "cpu" {
					dir := filepath.Join("/sys/fs/cgroup", f[1], f[2])
					return read(filepath.Join(dir, "cpu.cfs_quota_us")), read(filepath.Join(dir, "cpu.shares"))
				}
			}
		}
		max, _, _ := strings.Cut(read(filepath.Join("/sys/fs/cgroup", v2, "cpu.max")), " ")
		return max, ""
	}
	t.Fatalf("no process %q", cmd)
	return "", ""
}
