package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/inflight"
	"github.com/kiln-build/kiln/internal/testutil"
)

// loadBusybox puts the test busybox image in a new store as
// test/busybox:1 and returns the store's directory.
func loadBusybox(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "root")
	archive := filepath.Join(dir, "bb.tar")
	if err := export.OCIArchive(context.Background(), testutil.BusyboxImage(t), archive, []string{"test/busybox:1"}); err != nil {
		t.Fatal(err)
	}
	if out, code := kiln(t, "--root", root, "load", "-i", archive); code != 0 {
		t.Fatalf("kiln load: %s", out)
	}
	return root
}

// serveBusybox starts kiln serve on the socket dir/kiln.sock with a new
// store in dir holding test/busybox:1 (loadBusybox), with extra flags,
// and returns the server, the store and the socket.
func serveBusybox(t *testing.T, dir string, extra ...string) (s *server, root, sock string) {
	t.Helper()
	root = loadBusybox(t, dir)
	sock = filepath.Join(dir, "kiln.sock")
	s = startServe(t, 1, nil, "", append([]string{"--root", root, "--host", "unix://" + sock}, extra...)...)
	return s, root, sock
}

// readEvents reads kiln serve --events.
func readEvents(t *testing.T, path string) []inflight.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []inflight.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e inflight.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("kiln serve --events wrote %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// TestServeConcurrent: 8 real clients (docker CLI and docker-py
// processes) build at once through one kiln serve, several of them the
// same Dockerfile, whose expensive RUN step is also another Dockerfile's.
// All succeed; the server's events show each step ran once, the others
// using its result; the builds of one Dockerfile are one image.
func TestServeConcurrent(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	py := exec.Command("python3", "-c", "import docker").Run() == nil
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	s, root, sock := serveBusybox(t, dir, "--max-concurrent-builds", "8", "--events", events)
	host := "unix://" + sock

	// $RANDOM: a step that ran twice would make two images
	shared := "RUN echo $RANDOM > /r && sleep 1\n"
	dockerfiles := map[string]string{
		"a": "FROM test/busybox:1\n" + shared + "RUN echo a-$RANDOM > /a\n",
		"b": "FROM test/busybox:1\n" + shared + "RUN echo b-$RANDOM > /b && sleep 1\n",
		"c": "FROM test/busybox:1\nRUN echo c-$RANDOM > /c && sleep 1\n",
	}
	ctxDir := filepath.Join(dir, "ctx")
	files := map[string]string{}
	for name, df := range dockerfiles {
		files[name+"/Dockerfile"] = df
	}
	writeFiles(t, ctxDir, files)

	type client struct {
		kind, dockerfile string
	}
	clients := []client{
		{"docker", "a"}, {"docker", "a"}, {"docker", "a"}, {"docker", "b"}, {"docker", "b"},
		{"docker-py", "a"}, {"docker-py", "c"}, {"docker-py", "c"},
	}
	ids := make([]string, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		if c.kind == "docker-py" && !py {
			c.kind = "docker" // docker-py is missing: the CLI stands in
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cmd *exec.Cmd
			iid := filepath.Join(dir, fmt.Sprintf("iid%d", i))
			switch c.kind {
			case "docker":
				cmd = exec.Command("docker", "-H", host, "build", "--network", "none", "--iidfile", iid, "-t", fmt.Sprintf("conc:%d", i), "-f", c.dockerfile+"/Dockerfile", ".")
				cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
			case "docker-py":
				cmd = exec.Command("python3", "-c", `
import docker, sys
c = docker.APIClient(base_url=sys.argv[1])
for m in c.build(path=sys.argv[2], dockerfile=sys.argv[3], tag=sys.argv[5], network_mode="none", decode=True):
    if "error" in m:
        sys.exit("build failed: %s" % m["error"])
    if "aux" in m:
        open(sys.argv[4], "w").write(m["aux"]["ID"])
`, host, ctxDir, c.dockerfile+"/Dockerfile", iid, fmt.Sprintf("conc:%d", i))
			}
			cmd.Dir = ctxDir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("client %d (%s, %s): %v:\n%s", i, c.kind, c.dockerfile, err, out)
				return
			}
			id, err := os.ReadFile(iid)
			if err != nil || !strings.HasPrefix(string(id), "sha256:") {
				t.Errorf("client %d (%s, %s) has no image ID: %q, %v:\n%s", i, c.kind, c.dockerfile, id, err, out)
			}
			ids[i] = string(id)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.Fatalf("server:\n%s", s.log)
	}
	first := map[string]string{}
	for i, c := range clients {
		if f, ok := first[c.dockerfile]; !ok {
			first[c.dockerfile] = ids[i]
		} else if ids[i] != f {
			t.Errorf("two builds of Dockerfile %s made two images: %s and %s", c.dockerfile, f, ids[i])
		}
	}

	// Every step ran once; the other builds needing it used its result.
	byKey := map[string]map[inflight.Outcome]int{}
	steps := map[string]string{}
	for _, e := range readEvents(t, events) {
		if byKey[e.Key] == nil {
			byKey[e.Key] = map[inflight.Outcome]int{}
		}
		byKey[e.Key][e.Outcome]++
		steps[e.Key] = e.Step
	}
	users := map[string]int{} // builds that have each RUN line
	for _, c := range clients {
		for _, l := range strings.Split(dockerfiles[c.dockerfile], "\n") {
			if strings.HasPrefix(l, "RUN ") {
				users[strings.TrimPrefix(l, "RUN ")]++
			}
		}
	}
	found := map[string]bool{}
	for key, n := range byKey {
		run := ""
		for cmd := range users {
			if strings.HasSuffix(steps[key], "RUN "+cmd) {
				run = cmd
			}
		}
		if run == "" {
			t.Errorf("an event for a step that is no RUN of the builds: %q", steps[key])
			continue
		}
		found[run] = true
		if n[inflight.Ran] != 1 || n[inflight.Ran]+n[inflight.Shared]+n[inflight.Cached] != users[run] {
			t.Errorf("step %q: %v; want ran once and %d builds in all", run, n, users[run])
		}
		t.Logf("step %q: %v", run, n)
	}
	if len(found) != len(users) {
		t.Errorf("events of %d RUN steps, want %d: %v", len(found), len(users), byKey)
	}
	stopAndVerify(t, s, root)
}

// stopAndVerify sends kiln serve SIGTERM: it must exit 0, with no data
// race found when the binary has the detector (KILN_TEST_RACE=1), no
// mount left under the store, and the store must pass kiln verify.
func stopAndVerify(t *testing.T, s *server, root string) {
	t.Helper()
	if code := s.stop(t); code != 0 {
		t.Errorf("kiln serve exited %d after SIGTERM:\n%s", code, s.log)
	}
	if strings.Contains(s.log.String(), "DATA RACE") {
		t.Errorf("kiln serve has a data race:\n%s", s.log)
	}
	if n := mountsUnder(t, root); n > 0 {
		t.Errorf("%d mounts under the store once kiln serve stopped", n)
	}
	if out, code := kiln(t, "--root", root, "verify"); code != 0 {
		t.Errorf("kiln verify after kiln serve stopped: %s", out)
	}
}

// dockerBuild starts `docker build` of dockerfile in dir through host.
func dockerBuild(t *testing.T, host, dir, dockerfile string, out io.Writer) *exec.Cmd {
	t.Helper()
	writeFiles(t, dir, map[string]string{"Dockerfile": dockerfile})
	cmd := exec.Command("docker", "-H", host, "build", "--network", "none", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// waitRunning waits until a process has cmdline cmd.
func waitRunning(t *testing.T, cmd string, log fmt.Stringer) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !running(t, cmd); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q is not running:\n%s", cmd, log)
		}
	}
}

// waitGone waits until no process has cmdline cmd and nothing is mounted
// under root.
func waitGone(t *testing.T, cmd, root string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); running(t, cmd) || mountsUnder(t, root) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q running: %v; %d mounts under the store", cmd, running(t, cmd), mountsUnder(t, root))
		}
	}
}

// marker is a number no other process has on its command line.
func marker() string {
	return fmt.Sprintf("%d", time.Now().UnixNano()%1000000+2000000)
}

// TestServeCancel: a docker CLI killed mid-RUN cancels its build only (its
// RUN's processes die, nothing stays mounted, a concurrent build
// succeeds); SIGTERM lets builds in flight finish within
// --shutdown-timeout, and with --shutdown-timeout 0 cancels them; either
// way kiln serve exits 0 and the store passes kiln verify.
func TestServeCancel(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	dir := t.TempDir()
	root := loadBusybox(t, dir)

	t.Run("client killed", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "kiln.sock")
		s := startServe(t, 1, nil, "", "--root", root, "--host", "unix://"+sock)
		m := marker()
		var killedOut, otherOut bytes.Buffer
		killed := dockerBuild(t, "unix://"+sock, t.TempDir(), "FROM test/busybox:1\nRUN sleep "+m+"\n", &killedOut)
		waitRunning(t, "sleep "+m, s.log)
		other := dockerBuild(t, "unix://"+sock, t.TempDir(), "FROM test/busybox:1\nRUN sleep 2.5 && echo other-done\n", &otherOut)
		waitRunning(t, "sleep 2.5", s.log)
		killed.Process.Signal(syscall.SIGKILL)
		killed.Wait()
		if err := other.Wait(); err != nil || !strings.Contains(otherOut.String(), "Successfully built") {
			t.Errorf("the other build, while one client was killed: %v:\n%s\nserver:\n%s", err, otherOut.String(), s.log)
		}
		waitGone(t, "sleep "+m, root)
		stopAndVerify(t, s, root)
	})

	for _, tc := range []struct {
		name    string
		timeout string
		succeed bool // the build in flight finishes
	}{
		{"SIGTERM finishes builds", "60s", true},
		{"SIGTERM cancels builds", "0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "kiln.sock")
			s := startServe(t, 1, nil, "", "--root", root, "--host", "unix://"+sock, "--shutdown-timeout", tc.timeout)
			m := marker()
			df := "FROM test/busybox:1\nRUN sleep " + m + "\n"
			if tc.succeed {
				// a few seconds: SIGTERM comes while it runs
				df = "FROM test/busybox:1\nRUN sleep 2.0" + m[len(m)-3:] + " && echo finished\n"
				m = "2.0" + m[len(m)-3:]
			}
			var out bytes.Buffer
			b := dockerBuild(t, "unix://"+sock, t.TempDir(), df, &out)
			waitRunning(t, "sleep "+m, s.log)
			if code := s.stop(t); code != 0 {
				t.Errorf("kiln serve exited %d after SIGTERM:\n%s", code, s.log)
			}
			err := b.Wait()
			if tc.succeed && (err != nil || !strings.Contains(out.String(), "Successfully built")) {
				t.Errorf("the build in flight at SIGTERM: %v, want it finished:\n%s\nserver:\n%s", err, out.String(), s.log)
			}
			if !tc.succeed && (err == nil || !strings.Contains(out.String(), "kiln serve is stopping")) {
				t.Errorf("the build in flight at SIGTERM with --shutdown-timeout 0: %v, want it cancelled, saying why:\n%s", err, out.String())
			}
			if _, err := os.Stat(sock); err == nil {
				t.Errorf("the socket %s is left after SIGTERM", sock)
			}
			waitGone(t, "sleep "+m, root)
			if strings.Contains(s.log.String(), "DATA RACE") {
				t.Errorf("kiln serve has a data race:\n%s", s.log)
			}
			if o, code := kiln(t, "--root", root, "verify"); code != 0 {
				t.Errorf("kiln verify after kiln serve stopped: %s", o)
			}
		})
	}
}

// pids are the processes whose cmdline (space-joined) contains cmd.
func pids(t *testing.T, cmd string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), cmd) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestServeSharedStepRunnerCancelled: a build waiting for a step another
// build runs does not fail when that build is cancelled: it runs the step
// itself. The RUN waits for a file the test creates in its root, so
// nothing depends on timing.
func TestServeSharedStepRunnerCancelled(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	s, root, sock := serveBusybox(t, dir, "--events", events)
	m := marker()
	gate := "/go-" + m
	df := "FROM test/busybox:1\nRUN until [ -e " + gate + " ]; do sleep 0.1; done; echo passed > /passed\n"

	// the runner: a plain HTTP client, cancelled below
	resp, cancel := startBuild(t, unixClient(sock), df)
	defer cancel()
	defer resp.Body.Close()
	waitRunning(t, gate, s.log)
	runner := pids(t, gate)

	// the waiter: the docker CLI
	var out syncBuffer
	waiter := dockerBuild(t, "unix://"+sock, t.TempDir(), df, &out)
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out.String(), "waiting for a concurrent build running the same step"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second build does not wait for the first:\n%s\nserver:\n%s", out.String(), s.log)
		}
	}
	cancel()
	resp.Body.Close()
	// the runner's RUN dies; the waiter's starts
	var mine []string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the waiting build does not run the step itself:\n%s\nserver:\n%s", out.String(), s.log)
		}
		mine = pids(t, gate)
		old := false
		for _, p := range mine {
			old = old || slices.Contains(runner, p)
		}
		if len(mine) > 0 && !old {
			break
		}
	}
	for _, p := range mine {
		os.WriteFile(filepath.Join("/proc", p, "root", gate), nil, 0o644)
	}
	if err := waiter.Wait(); err != nil || !strings.Contains(out.String(), "Successfully built") {
		t.Fatalf("the waiting build after the other was cancelled: %v:\n%s\nserver:\n%s", err, out.String(), s.log)
	}
	n := map[inflight.Outcome]int{}
	for _, e := range readEvents(t, events) {
		n[e.Outcome]++
	}
	if n[inflight.Ran] != 1 || n[inflight.Shared] != 0 {
		t.Errorf("events: %v; want the step ran once, by the build that waited", n)
	}
	stopAndVerify(t, s, root)
}

// syncBuffer is a buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
