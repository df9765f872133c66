package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/serve"
)

// tarOf is a context archive of entries.
func tarOf(t *testing.T, entries ...testutil.TarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := testutil.WriteEntries(tw, entries); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// postBuild sends body to POST /build?query and returns the status and
// the answer.
func postBuild(t *testing.T, c *http.Client, query string, body io.Reader) (int, string) {
	t.Helper()
	resp, err := c.Post("http://kiln/v1.41/build?"+query, "application/x-tar", body)
	if err != nil {
		t.Fatalf("POST /build: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST /build answered Content-Type %q, want application/json", ct)
	}
	return resp.StatusCode, string(b)
}

// TestServeBuild drives POST /build with the docker CLI, docker-py and a
// plain HTTP client: the image is kiln build's, recorded under its tag;
// a failing RUN names its Dockerfile line; bad requests get 4xx JSON and
// write nothing outside the build's scratch space.
func TestServeBuild(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	s, root, sock := serveBusybox(t, dir, "--max-context-size", "1m")
	host := "unix://" + sock
	c := unixClient(sock)

	ctxDir := filepath.Join(dir, "ctx")
	writeFiles(t, ctxDir, map[string]string{
		"f":               "hello\n",
		"sub/Dockerfile":  "FROM test/busybox:1\nARG A\nRUN echo \"a=$A\" > /a\nCOPY f /f\n",
		"fail/Dockerfile": "FROM test/busybox:1\nRUN echo about to fail\nRUN exit 3\n",
	})

	t.Run("docker", func(t *testing.T) {
		needTool(t, "docker", "docker.io")
		cmd := exec.Command("docker", "-H", host, "build", "--network", "none", "-t", "x", "--build-arg", "A=b", "-f", "sub/Dockerfile", ".")
		cmd.Dir = ctxDir
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("docker build: %v:\n%s\nserver:\n%s", err, out, s.log)
		}
		for _, want := range []string{"RUN echo \"a=b\" > /a", "COPY f /f", "Successfully built ", "Successfully tagged x:latest"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("docker build output has no %q:\n%s", want, out)
			}
		}
		// kiln build of the same inputs: the same image ID
		iid := filepath.Join(t.TempDir(), "iid")
		if o, code := kiln(t, "--root", root, "build", "--network", "none", "--build-arg", "A=b", "-f", filepath.Join(ctxDir, "sub/Dockerfile"), "--iidfile", iid, ctxDir); code != 0 {
			t.Fatalf("kiln build: %s", o)
		}
		id, err := os.ReadFile(iid)
		if err != nil {
			t.Fatal(err)
		}
		short := strings.TrimPrefix(string(id), "sha256:")[:12]
		if !strings.Contains(string(out), "Successfully built "+short+"\n") {
			t.Errorf("docker build built another image than kiln build's %s:\n%s", id, out)
		}
		images, _ := kiln(t, "--root", root, "images")
		if !strings.Contains(images, short) || !strings.Contains(images, "x ") {
			t.Errorf("kiln images does not list x as %s:\n%s", short, images)
		}

		cmd = exec.Command("docker", "-H", host, "build", "--network", "none", "-f", "fail/Dockerfile", ".")
		cmd.Dir = ctxDir
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
		out, err = cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "Dockerfile:3") {
			t.Errorf("docker build of a failing RUN: %v, want exit 1 naming Dockerfile:3:\n%s", err, out)
		}
	})

	t.Run("docker-py", func(t *testing.T) {
		needTool(t, "python3", "python3")
		if exec.Command("python3", "-c", "import docker").Run() != nil {
			testutil.SkipHost(t, "needs docker-py (Debian package python3-docker)")
		}
		out, err := exec.Command("python3", "-c", `
import docker, json, sys
c = docker.APIClient(base_url=sys.argv[1])
msgs = list(c.build(path=sys.argv[2], dockerfile="sub/Dockerfile", tag="py:1", buildargs={"A": "py"}, network_mode="none", decode=True))
print(json.dumps(msgs))
`, host, ctxDir).CombinedOutput()
		if err != nil {
			t.Fatalf("docker-py: %v:\n%s", err, out)
		}
		var msgs []map[string]any
		if err := json.Unmarshal(out, &msgs); err != nil {
			t.Fatalf("docker-py printed no messages: %v:\n%s", err, out)
		}
		var id string
		streams := 0
		for _, m := range msgs {
			if aux, ok := m["aux"].(map[string]any); ok {
				id, _ = aux["ID"].(string)
			}
			if _, ok := m["stream"]; ok {
				streams++
			}
			if _, ok := m["error"]; ok {
				t.Errorf("docker-py build failed: %v", m)
			}
		}
		if !strings.HasPrefix(id, "sha256:") || streams < 3 {
			t.Errorf("docker-py build: aux ID %q, %d stream messages:\n%s", id, streams, out)
		}

		// the high-level API: images.build returns the built image,
		// which it looks up by the ID the stream gave
		out, err = exec.Command("python3", "-c", `
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1])
img, logs = c.images.build(path=sys.argv[2], dockerfile="sub/Dockerfile", tag="py:2", buildargs={"A": "py"}, network_mode="none")
print(img.id, " ".join(img.tags))
`, host, ctxDir).CombinedOutput()
		if err != nil {
			t.Fatalf("docker-py images.build: %v:\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != id+" py:1 py:2" && got != id+" py:2 py:1" {
			t.Errorf("docker-py images.build returned %q, want the image %s named py:1 and py:2", got, id)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		canary := testutil.NewCanary(t)
		good := tarOf(t, testutil.File("Dockerfile", 0o644, "FROM scratch\n"))
		big := tarOf(t, testutil.File("Dockerfile", 0o644, "FROM scratch\n"), testutil.File("big", 0o644, strings.Repeat("x", 2<<20)))
		for _, tc := range []struct {
			name, query string
			body        []byte
			code        int
			want        string
		}{
			{"traversal", "", tarOf(t, testutil.File("Dockerfile", 0o644, "FROM scratch\n"), testutil.File(canary.Rel()+"/file", 0o644, "pwned")), 400, "reading the build context"},
			{"symlink out", "", tarOf(t, testutil.Symlink("l", canary.Dir), testutil.File("l/file", 0o644, "pwned"), testutil.File("Dockerfile", 0o644, "FROM scratch\n")), 400, "reading the build context"},
			{"too large", "", big, 413, "--max-context-size"},
			{"not a tar", "", []byte("FROM scratch\n" + strings.Repeat("\n", 2000)), 400, "not a tar archive"},
			{"bad buildargs", "buildargs=" + url.QueryEscape("{nope"), good, 400, "buildargs"},
			{"bad labels", "labels=" + url.QueryEscape(`["a"]`), good, 400, "labels"},
			{"bad networkmode", "networkmode=bridge2", good, 400, "networkmode"},
			{"host network not granted", "networkmode=host", good, 403, "--allow network.host"},
			{"no Dockerfile", "dockerfile=nope", good, 400, "dockerfile"},
			{"Dockerfile outside", "dockerfile=" + url.QueryEscape(canary.Rel()+"/file"), good, 400, "dockerfile"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, body := postBuild(t, c, tc.query, bytes.NewReader(tc.body))
				var msg struct{ Message string }
				if code != tc.code || json.Unmarshal([]byte(body), &msg) != nil || !strings.Contains(msg.Message, tc.want) {
					t.Errorf("answer %d %s; want %d with a JSON message naming %q", code, body, tc.code, tc.want)
				}
			})
		}
		canary.Check(t)
		if ents, err := scratchGone(filepath.Join(root, "tmp")); err != nil || len(ents) != 0 {
			t.Errorf("the store's tmp after the refused builds: %v, %v; want it empty", ents, err)
		}
	})

	t.Run("disconnect", func(t *testing.T) {
		// A unique argument finds the RUN's process.
		marker := fmt.Sprintf("%d", time.Now().UnixNano()%1000000+1000000)
		df := "FROM test/busybox:1\nRUN echo is-$((1+1)); sleep " + marker + "\n"
		resp, cancel := startBuild(t, c, df)
		defer cancel()
		readUntilRun(t, resp.Body, s.log)
		for wait := time.Now().Add(30 * time.Second); !running(t, "sleep "+marker); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(wait) {
				t.Fatalf("the RUN's sleep %s is not running", marker)
			}
		}
		cancel()
		resp.Body.Close()
		deadline := time.Now().Add(60 * time.Second)
		for running(t, "sleep "+marker) || mountsUnder(t, root) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("60s after the client went away: sleep running %v, %d mounts under the store", running(t, "sleep "+marker), mountsUnder(t, root))
			}
			time.Sleep(100 * time.Millisecond)
		}
		// the server still serves
		if got := ping(t, c, "http://kiln"); got != "200 OK" {
			t.Errorf("/_ping after a cancelled build: %s", got)
		}
	})
}

// running reports whether a process has cmdline (space-joined) cmd.
func running(t *testing.T, cmd string) bool {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), cmd) {
			return true
		}
	}
	return false
}

// mountsUnder counts this mount namespace's mounts below dir.
func mountsUnder(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			n++
		}
	}
	return n
}

// scratchGone waits for kiln serve to remove the scratch directories in
// tmp, which it does after each response, and returns what is left
// once tmp is empty or a bound passed. The pool of emptied files kiln
// serve keeps there (serve.FilePoolPrefix) does not count.
func scratchGone(tmp string) ([]os.DirEntry, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		all, err := os.ReadDir(tmp)
		var ents []os.DirEntry
		for _, e := range all {
			if !strings.HasPrefix(e.Name(), serve.FilePoolPrefix) {
				ents = append(ents, e)
			}
		}
		if err != nil || len(ents) == 0 || time.Now().After(deadline) {
			return ents, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
