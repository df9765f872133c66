package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/registry/registrytest"
)

// dockerAs runs the docker CLI with the Docker config in cfg (its
// logins), stdin and extra environment; it returns stdout+stderr and the
// exit code.
func dockerAs(t *testing.T, cfg, stdin string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(append(os.Environ(), "DOCKER_CONFIG="+cfg), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running docker: %v", err)
	}
	return string(out), 0
}

// dockerLogin writes a Docker config logged in to host as user with
// password, as docker login would (without asking anyone).
func dockerLogin(t *testing.T, host, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	writeFile(t, filepath.Join(dir, "config.json"), `{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`)
	return dir
}

// storeHolds reports the files under root whose bytes contain s.
func storeHolds(t *testing.T, root, s string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

var dockerDigestRE = regexp.MustCompile(`1: digest: (sha256:[0-9a-f]{64}) size: \d+`)

// TestServeRegistry drives kiln serve's registry endpoints with the
// docker CLI and docker-py against the real distribution registry with
// TLS and htpasswd: docker login checks the password through kiln serve,
// docker push sends kiln's image (the digest kiln push gives), docker
// pull fetches into kiln's store, and docker build pulls its FROM with
// the credentials of the client's Docker config, never the server's.
// The password is in neither the server's log nor its store.
func TestServeRegistry(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	certs := registryEnv(t)
	const password = "s3cret-Pw-7319"
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{TLS: true, User: "ci", Password: password})
	reg.CA.InstallCertsDir(t, certs, reg.Host)
	app := reg.Host + "/team/app"

	dir := t.TempDir()
	root := loadBusybox(t, dir)
	ctxDir := registryContext(t, "FROM test/busybox:1\nCOPY greeting /greeting\n")
	if out, code := kiln(t, "--root", root, "build", "--progress=plain", "-t", app+":1", ctxDir); code != 0 {
		t.Fatalf("kiln build: %s", out)
	}
	// The server's own Docker config (the test's, inherited) can reach
	// the registry: a client that sends no credentials must still fail.
	if out, code := kilnWithStdin(t, password+"\n", "login", reg.Host, "-u", "ci", "--password-stdin"); code != 0 {
		t.Fatalf("kiln login: %s", out)
	}

	sock := filepath.Join(dir, "kiln.sock")
	host := "unix://" + sock
	s := startServe(t, 1, nil, "", "--root", root, "--host", host)
	loggedIn := t.TempDir()
	anonymous := t.TempDir()
	wrong := dockerLogin(t, reg.Host, "ci", "not-the-password")

	t.Run("login", func(t *testing.T) {
		out, code := dockerAs(t, loggedIn, "nope\n", nil, "-H", host, "login", reg.Host, "-u", "ci", "--password-stdin")
		if code != 1 || !strings.Contains(out, "authentication to registry "+reg.Host+" failed") {
			t.Errorf("docker login with a wrong password: exit %d:\n%s", code, out)
		}
		out, code = dockerAs(t, loggedIn, password+"\n", nil, "-H", host, "login", reg.Host, "-u", "ci", "--password-stdin")
		if code != 0 || !strings.Contains(out, "Login Succeeded") {
			t.Fatalf("docker login: exit %d:\n%s\nserver:\n%s", code, out, s.log)
		}
	})

	var pushedDigest string
	t.Run("push", func(t *testing.T) {
		out, code := dockerAs(t, loggedIn, "", nil, "-H", host, "push", app+":1")
		m := dockerDigestRE.FindStringSubmatch(out)
		if code != 0 || m == nil || !strings.Contains(out, "The push refers to repository ["+app+"]") || !strings.Contains(out, "Pushed") {
			t.Fatalf("docker push: exit %d:\n%s\nserver:\n%s", code, out, s.log)
		}
		pushedDigest = m[1]
		// kiln push of the same stored image: the same manifest
		out, code = kiln(t, "--root", root, "push", app+":1", app+":kiln")
		if code != 0 || !strings.Contains(out, pushedDigest) {
			t.Errorf("kiln push gives another digest than docker push's %s:\n%s", pushedDigest, out)
		}
		img := fetchRemote(t, app+":1")
		if d, err := img.Digest(); err != nil || d.String() != pushedDigest {
			t.Errorf("the registry has %v (%v) under :1, docker push said %s", d, err, pushedDigest)
		}
		// again: every layer is there
		out, code = dockerAs(t, loggedIn, "", nil, "-H", host, "push", app+":1")
		if code != 0 || !strings.Contains(out, "Layer already exists") || !strings.Contains(out, pushedDigest) {
			t.Errorf("second docker push: exit %d:\n%s", code, out)
		}

		for name, cfg := range map[string]string{"wrong password": wrong, "no credentials": anonymous} {
			out, code = dockerAs(t, cfg, "", nil, "-H", host, "push", app+":1")
			if code != 1 || !strings.Contains(out, "authentication to registry "+reg.Host+" failed") || !strings.Contains(out, "401 Unauthorized") {
				t.Errorf("docker push with %s: exit %d, want 1 with the registry's refusal:\n%s", name, code, out)
			}
		}
		out, code = dockerAs(t, loggedIn, "", nil, "-H", host, "push", reg.Host+"/team/nothing:1")
		if code != 1 || !strings.Contains(out, "no such image in kiln's store") {
			t.Errorf("docker push of an image kiln does not have: exit %d:\n%s", code, out)
		}
	})

	t.Run("pull", func(t *testing.T) {
		if pushedDigest == "" {
			t.Skip("nothing was pushed")
		}
		root2 := filepath.Join(t.TempDir(), "root")
		sock2 := filepath.Join(t.TempDir(), "kiln.sock")
		startServe(t, 1, nil, "", "--root", root2, "--host", "unix://"+sock2)
		out, code := dockerAs(t, anonymous, "", nil, "-H", "unix://"+sock2, "pull", app+":1")
		if code != 1 || !strings.Contains(out, "authentication to registry "+reg.Host+" failed") {
			t.Errorf("docker pull without credentials: exit %d:\n%s", code, out)
		}
		out, code = dockerAs(t, loggedIn, "", nil, "-H", "unix://"+sock2, "pull", app+":1")
		for _, want := range []string{"1: Pulling from team/app", "Pull complete", "Digest: " + pushedDigest, "Status: Downloaded newer image for " + app + ":1"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("docker pull: exit %d, no %q in:\n%s", code, want, out)
			}
		}
		out, code = dockerAs(t, loggedIn, "", nil, "-H", "unix://"+sock2, "pull", app+":1")
		if code != 0 || !strings.Contains(out, "Status: Image is up to date for "+app+":1") || !strings.Contains(out, "Already exists") {
			t.Errorf("second docker pull: exit %d:\n%s", code, out)
		}
		out, code = dockerAs(t, loggedIn, "", nil, "-H", "unix://"+sock2, "pull", app+":nope")
		if code != 1 || !strings.Contains(out, "has no such image") {
			t.Errorf("docker pull of a tag the registry lacks: exit %d:\n%s", code, out)
		}
		// in the store: a build uses it without the registry
		images, _ := kiln(t, "--root", root2, "images")
		if !strings.Contains(images, app) {
			t.Errorf("kiln images after docker pull:\n%s", images)
		}
		out, code = kiln(t, "--root", root2, "build", "--progress=plain", "--network", "none", registryContext(t, "FROM "+app+":1\nRUN cat /greeting\n"))
		if code != 0 || !strings.Contains(out, "hello from kiln") {
			t.Errorf("kiln build FROM the pulled image: exit %d:\n%s", code, out)
		}
		if found := storeHolds(t, root2, password); len(found) > 0 {
			t.Errorf("kiln's store holds the password in %v", found)
		}
	})

	t.Run("build", func(t *testing.T) {
		if pushedDigest == "" {
			t.Skip("nothing was pushed")
		}
		build := func(cfg string) (string, int) {
			dir := registryContext(t, "FROM "+app+":1\nRUN cat /greeting > /copy\n")
			cmd := exec.Command("docker", "-H", host, "build", "--pull", "--network", "none", ".")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+cfg)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return string(out), ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return string(out), 0
		}
		out, code := build(loggedIn)
		if code != 0 || !strings.Contains(out, "Successfully built") {
			t.Errorf("docker build FROM the private image with credentials: exit %d:\n%s\nserver:\n%s", code, out, s.log)
		}
		for name, cfg := range map[string]string{"no credentials": anonymous, "wrong password": wrong} {
			out, code = build(cfg)
			if code != 1 || !strings.Contains(out, "authentication to registry "+reg.Host+" failed") {
				t.Errorf("docker build FROM the private image with %s: exit %d, want 1 naming the refusal:\n%s", name, code, out)
			}
		}
	})

	t.Run("malformed headers", func(t *testing.T) {
		c := unixClient(sock)
		for _, tc := range []struct{ path, header, want string }{
			{"/v1.41/build", "X-Registry-Config", "invalid X-Registry-Config header"},
			{"/v1.41/images/" + app + "/push?tag=1", "X-Registry-Auth", "invalid X-Registry-Auth header"},
			{"/v1.41/images/create?fromImage=" + app + "&tag=1", "X-Registry-Auth", "invalid X-Registry-Auth header"},
		} {
			body := tarOf(t, testutil.File("Dockerfile", 0o644, "FROM scratch\n"))
			req, err := http.NewRequest("POST", "http://kiln"+tc.path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(tc.header, base64.URLEncoding.EncodeToString([]byte(`{"user":`+password)))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var m struct{ Message string }
			if resp.StatusCode != 400 || json.Unmarshal(b, &m) != nil || !strings.Contains(m.Message, tc.want) || strings.Contains(m.Message, password) {
				t.Errorf("POST %s with a malformed %s: %d %s; want 400 with %q", tc.path, tc.header, resp.StatusCode, b, tc.want)
			}
		}
	})

	t.Run("docker-py", func(t *testing.T) {
		needTool(t, "python3", "python3")
		if exec.Command("python3", "-c", "import docker").Run() != nil {
			testutil.SkipHost(t, "needs docker-py (Debian package python3-docker)")
		}
		if pushedDigest == "" {
			t.Skip("nothing was pushed")
		}
		for _, tc := range []struct {
			name, password string
			ok             bool
		}{{"right password", password, true}, {"wrong password", "nope", false}} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := exec.Command("python3", "-c", `
import docker, json, sys
c = docker.DockerClient(base_url=sys.argv[1])
msgs = list(c.images.push(sys.argv[2], tag="1", auth_config={"username": "ci", "password": sys.argv[3]}, stream=True, decode=True))
print(json.dumps(msgs))
`, host, app, tc.password).CombinedOutput()
				if err != nil {
					t.Fatalf("docker-py: %v:\n%s", err, out)
				}
				var msgs []map[string]any
				if err := json.Unmarshal(out, &msgs); err != nil {
					t.Fatalf("docker-py printed no messages: %v:\n%s", err, out)
				}
				var digest, failed string
				for _, m := range msgs {
					if aux, ok := m["aux"].(map[string]any); ok {
						digest, _ = aux["Digest"].(string)
					}
					if e, ok := m["error"].(string); ok {
						failed = e
					}
				}
				if tc.ok && (digest != pushedDigest || failed != "") {
					t.Errorf("docker-py push: aux digest %q (want %s), error %q:\n%s", digest, pushedDigest, failed, out)
				}
				if !tc.ok && (digest != "" || !strings.Contains(failed, "authentication to registry")) {
					t.Errorf("docker-py push with a wrong password: aux digest %q, error %q:\n%s", digest, failed, out)
				}
			})
		}
	})

	// The password went through kiln serve many times: it is in neither
	// its log nor its store.
	if strings.Contains(s.log.String(), password) {
		t.Errorf("kiln serve's log shows the password:\n%s", s.log)
	}
	if found := storeHolds(t, root, password); len(found) > 0 {
		t.Errorf("kiln's store holds the password in %v", found)
	}
}
