package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/kiln-build/kiln/internal/testutil"
)

// tarEntries reads a tar stream into its regular files' contents by name.
func tarEntries(t *testing.T, data []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading the tar on stdout: %v (%d bytes)", err, len(data))
		}
		b, _ := io.ReadAll(tr)
		out[strings.TrimPrefix(h.Name, "./")] = string(b)
	}
}

// TestOutputStdout writes the root filesystem tar (-o -, type=tar) and the
// OCI archive (type=oci,dest=-) to stdout: the stream parses, and
// progress, with --quiet the image ID, went to stderr only.
func TestOutputStdout(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	ctxDir := registryContext(t, "FROM "+reg+"/library/busybox:latest\nCOPY greeting /greeting\nRUN echo built > /built\n")
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, files map[string]string)
	}{
		{"-o -", []string{"-o", "-"}, func(t *testing.T, f map[string]string) {
			if f["greeting"] != "hello from kiln\n" || f["built"] != "built\n" {
				t.Errorf("rootfs tar lacks the build's files: greeting %q, built %q", f["greeting"], f["built"])
			}
		}},
		{"type=tar,dest=-", []string{"-o", "type=tar,dest=-", "-q"}, func(t *testing.T, f map[string]string) {
			if f["built"] != "built\n" {
				t.Errorf("rootfs tar lacks /built")
			}
		}},
		{"type=oci,dest=-", []string{"-o", "type=oci,dest=-", "-t", "example.com/app:1"}, func(t *testing.T, f map[string]string) {
			var idx struct {
				Manifests []struct {
					Digest      string
					Annotations map[string]string
				}
			}
			if err := json.Unmarshal([]byte(f["index.json"]), &idx); err != nil || len(idx.Manifests) != 1 {
				t.Fatalf("index.json %q: %v", f["index.json"], err)
			}
			m := idx.Manifests[0]
			if _, ok := f["blobs/sha256/"+strings.TrimPrefix(m.Digest, "sha256:")]; !ok || f["oci-layout"] == "" {
				t.Errorf("the OCI archive lacks its manifest blob or oci-layout: %v", keys(f))
			}
			if m.Annotations["io.containerd.image.name"] != "example.com/app:1" {
				t.Errorf("index.json names %v", m.Annotations)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build", "--root", root, "--progress=plain"}, tt.args...)
			cmd := exec.Command(kilnBin, append(args, ctxDir)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v:\n%s", err, stderr.String())
			}
			// Nothing but the archive: whole tar blocks, ending in the
			// two zero blocks of its end.
			b := stdout.Bytes()
			if len(b)%512 != 0 || len(b) < 1024 || !bytes.Equal(b[len(b)-1024:], make([]byte, 1024)) {
				t.Errorf("stdout is not a tar stream alone (%d bytes, ends %q)", len(b), b[max(0, len(b)-64):])
			}
			tt.check(t, tarEntries(t, b))
			quiet := slices.Contains(tt.args, "-q")
			if !quiet && !strings.Contains(stderr.String(), "exporting to") {
				t.Errorf("no progress on stderr:\n%s", stderr.String())
			}
			if quiet && !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(stderr.String()) {
				t.Errorf("--quiet printed %q on stderr, want the image ID alone", stderr.String())
			}
		})
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestOutputStdoutRefused: an archive is not written to a terminal, nor
// two outputs to one stdout.
func TestOutputStdoutRefused(t *testing.T) {
	ctxDir := registryContext(t, "FROM scratch\nCOPY greeting /g\n")
	t.Run("terminal", func(t *testing.T) {
		ptmx, tty, err := pty.Open()
		if err != nil {
			testutil.SkipHostf(t, "no pseudo-terminal: %v", err)
		}
		defer ptmx.Close()
		defer tty.Close()
		go io.Copy(io.Discard, ptmx)
		cmd := exec.Command(kilnBin, "build", "--root", t.TempDir(), "-o", "type=oci,dest=-", ctxDir)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = tty, &stderr
		err = cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "refusing to write an archive to a terminal") {
			t.Errorf("%v:\n%s", err, stderr.String())
		}
	})
	t.Run("two", func(t *testing.T) {
		out, code := kiln(t, "build", "--root", t.TempDir(), "-o", "-", "-o", "type=oci", ctxDir)
		if code != 2 || !strings.Contains(out, "only one output can write to stdout") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})
}

// startDockerd starts a Docker engine of the test's own (data, exec root,
// pid file and socket in temporary directories, no bridge, no iptables)
// and returns its socket.
func startDockerd(t *testing.T) string {
	t.Helper()
	needRoot(t)
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		testutil.SkipHost(t, "needs dockerd (Debian package docker.io)")
	}
	dir, err := os.MkdirTemp("", "kiln-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "pid"), "-H", "unix://"+sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
		// Its data root holds overlay mounts until it stops.
		os.RemoveAll(dir)
	})
	client := dockerClient(sock)
	for i := 0; i < 300; i++ {
		resp, err := client.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return sock
			}
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	t.Fatalf("dockerd did not answer on %s:\n%s", sock, log)
	return ""
}

func dockerClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

// TestLoad loads the built image into a real dockerd with --load and with
// -o type=docker (no dest), then inspects it through the engine's API as
// docker image inspect does; without an engine, --load says what to do.
func TestLoad(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	sock := startDockerd(t)
	root := t.TempDir()
	ctxDir := registryContext(t, "FROM "+reg+"/library/busybox:latest\nCOPY greeting /greeting\nENV LOADED=yes\n")
	client := dockerClient(sock)
	for _, tt := range []struct{ name, flag, tag string }{
		{"--load", "--load", "kiln-test/load:1"},
		{"type=docker", "--output=type=docker", "kiln-test/load:2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", "unix://"+sock)
			out, code := kiln(t, "build", "--root", root, "--progress=plain", tt.flag, "-t", tt.tag, ctxDir)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			if !strings.Contains(out, "loading into the Docker engine at unix://"+sock) {
				t.Errorf("progress does not say where the image went:\n%s", out)
			}
			resp, err := client.Get("http://docker/images/" + tt.tag + "/json")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var img struct {
				ID     string
				Config struct{ Env []string }
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &img) != nil {
				t.Fatalf("inspecting %s: %s %s", tt.tag, resp.Status, body)
			}
			if !strings.Contains(strings.Join(img.Config.Env, " "), "LOADED=yes") {
				t.Errorf("the loaded image's env is %v", img.Config.Env)
			}
		})
	}
	t.Run("no engine", func(t *testing.T) {
		t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
		out, code := kiln(t, "build", "--root", root, "--load", ctxDir)
		if code == 0 || !strings.Contains(out, "--load") || !strings.Contains(out, "DOCKER_HOST") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})
}
