package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
	root := loadBusybox(t, dir)
	sock := filepath.Join(dir, "kiln.sock")
	host := "unix://" + sock
	events := filepath.Join(dir, "events.jsonl")
	s := startServe(t, 1, nil, "", "--root", root, "--host", host, "--max-concurrent-builds", "8", "--events", events)

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
	if out, code := kiln(t, "--root", root, "verify"); code != 0 {
		t.Errorf("kiln verify after the builds: %s", out)
	}
}
