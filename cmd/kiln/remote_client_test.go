package main

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/registry/registrytest"
)

// remoteServer is a kiln serve on a unix socket whose store holds
// test/busybox:1, for kiln --host.
type remoteServer struct {
	*server
	root, host string
}

func startRemoteServer(t *testing.T) remoteServer {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	s, root, sock := serveBusybox(t, dir)
	return remoteServer{server: s, root: root, host: "unix://" + sock}
}

// kilnClient runs kiln with extra environment and standard input; it
// returns stdout, stderr and the exit code.
func kilnClient(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(kilnBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running kiln: %v", err)
	}
	return out.String(), errb.String(), code
}

func readID(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading --iidfile: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// TestRemoteBuild: kiln --host build sends the context to a real kiln
// serve and shows its progress; the image is the one kiln build makes
// of the same inputs, .dockerignore'd files are not in it, a failing RUN
// exits 1 naming its Dockerfile line, flags the API cannot carry are
// refused by name, and Ctrl-C cancels the server's build.
func TestRemoteBuild(t *testing.T) {
	s := startRemoteServer(t)
	dir := t.TempDir()
	ctxDir := filepath.Join(dir, "ctx")
	writeFiles(t, ctxDir, map[string]string{
		"Dockerfile":      "FROM test/busybox:1\nARG A\nRUN echo \"a=$A\" > /a\nCOPY . /ctx/\n",
		".dockerignore":   "secret.txt\nlogs/\n",
		"f":               "hello\n",
		"sub/g":           "g\n",
		"secret.txt":      "do not send\n",
		"logs/big.log":    "noise\n",
		"fail/Dockerfile": "FROM test/busybox:1\nRUN echo about to fail\nRUN exit 3\n",
	})
	other := filepath.Join(dir, "elsewhere")
	writeFiles(t, other, map[string]string{"Dockerfile.alt": "FROM test/busybox:1\nCOPY f /f\nRUN cat /f\n"})

	local := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		iid := filepath.Join(t.TempDir(), "iid")
		if _, errOut, code := kilnClient(t, nil, stdin, append([]string{"--root", s.root, "build", "--network", "none", "--iidfile", iid}, args...)...); code != 0 {
			t.Fatalf("kiln build: exit %d:\n%s", code, errOut)
		}
		return readID(t, iid)
	}
	remoteBuild := func(t *testing.T, stdin string, args ...string) (string, string) {
		t.Helper()
		iid := filepath.Join(t.TempDir(), "iid")
		_, errOut, code := kilnClient(t, nil, stdin, append([]string{"--host", s.host, "build", "--network", "none", "--iidfile", iid}, args...)...)
		if code != 0 {
			t.Fatalf("kiln --host build: exit %d:\n%s\nserver:\n%s", code, errOut, s.log)
		}
		return readID(t, iid), errOut
	}

	t.Run("same image as kiln build", func(t *testing.T) {
		id, out := remoteBuild(t, "", "--progress", "plain", "--build-arg", "A=b", "-t", "remote/x:1", ctxDir)
		for _, want := range []string{"RUN echo \"a=b\" > /a", "COPY . /ctx/", "image " + id, "named remote/x:1"} {
			if !strings.Contains(out, want) {
				t.Errorf("kiln --host build output has no %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "Successfully built") {
			t.Errorf("kiln --host build printed docker's lines:\n%s", out)
		}
		if want := local(t, "", "--build-arg", "A=b", ctxDir); id != want {
			t.Errorf("kiln --host build made %s, kiln build of the same inputs %s", id, want)
		}
		// the image holds the context without what .dockerignore names
		dest := filepath.Join(t.TempDir(), "rootfs")
		writeFiles(t, filepath.Join(dir, "check"), map[string]string{"Dockerfile": "FROM remote/x:1\n"})
		if out, code := kiln(t, "--root", s.root, "build", "-o", "type=local,dest="+dest, filepath.Join(dir, "check")); code != 0 {
			t.Fatalf("exporting remote/x:1: %s", out)
		}
		for p, want := range map[string]bool{"ctx/f": true, "ctx/sub/g": true, "ctx/Dockerfile": true, "ctx/secret.txt": false, "ctx/logs": false, "a": true} {
			if _, err := os.Lstat(filepath.Join(dest, p)); (err == nil) != want {
				t.Errorf("/%s in the image: %v, want present=%v", p, err, want)
			}
		}
	})

	t.Run("KILN_HOST and -q", func(t *testing.T) {
		iid := filepath.Join(t.TempDir(), "iid")
		out, errOut, code := kilnClient(t, []string{"KILN_HOST=" + s.host}, "", "build", "-q", "--network", "none", "--build-arg", "A=q", "--iidfile", iid, ctxDir)
		if code != 0 {
			t.Fatalf("KILN_HOST kiln build -q: exit %d:\n%s", code, errOut)
		}
		if id := readID(t, iid); out != id+"\n" || !strings.HasPrefix(id, "sha256:") {
			t.Errorf("kiln build -q printed %q, want only the image ID %s", out, id)
		}
	})

	t.Run("Dockerfile outside the context", func(t *testing.T) {
		id, out := remoteBuild(t, "", "--progress", "plain", "-f", filepath.Join(other, "Dockerfile.alt"), ctxDir)
		if !strings.Contains(out, "hello") {
			t.Errorf("the RUN's output is not shown:\n%s", out)
		}
		if want := local(t, "", "-f", filepath.Join(other, "Dockerfile.alt"), ctxDir); id != want {
			t.Errorf("kiln --host build -f OUTSIDE made %s, kiln build %s", id, want)
		}
	})

	t.Run("Dockerfile from stdin", func(t *testing.T) {
		// COPY . shows the generated directory the Dockerfile travels in
		// is not part of the context, as docker build keeps it out
		df := "FROM test/busybox:1\nCOPY sub/g /g\nCOPY . /all/\n"
		id, _ := remoteBuild(t, df, "-f", "-", ctxDir)
		if want := local(t, df, "-f", "-", ctxDir); id != want {
			t.Errorf("kiln --host build -f - made %s, kiln build %s", id, want)
		}
	})

	t.Run("context tar on stdin", func(t *testing.T) {
		var tarball bytes.Buffer
		tw := tar.NewWriter(&tarball)
		if err := testutil.WriteEntries(tw, []testutil.TarEntry{
			testutil.File("Dockerfile", 0o644, "FROM test/busybox:1\nCOPY f /f\n"),
			testutil.File("f", 0o644, "from a tar\n"),
		}); err != nil {
			t.Fatal(err)
		}
		tw.Close()
		id, _ := remoteBuild(t, tarball.String(), "-")
		if want := local(t, tarball.String(), "-"); id != want {
			t.Errorf("kiln --host build - made %s, kiln build - %s", id, want)
		}
	})

	t.Run("tty display", func(t *testing.T) {
		_, errOut, code := kilnClient(t, []string{"TERM=xterm"}, "", "--host", s.host, "build", "--progress", "tty", "--network", "none", "--build-arg", "A=tty", ctxDir)
		if code != 0 || !strings.Contains(errOut, "[+] Building") || !strings.Contains(errOut, "COPY . /ctx/") || !strings.Contains(errOut, "image sha256:") {
			t.Errorf("kiln --host build --progress tty: exit %d:\n%s", code, errOut)
		}
	})

	t.Run("failing RUN", func(t *testing.T) {
		_, errOut, code := kilnClient(t, nil, "", "--host", s.host, "build", "--progress", "plain", "--network", "none", "-f", filepath.Join(ctxDir, "fail/Dockerfile"), ctxDir)
		if code != exitFailed || !strings.Contains(errOut, "Dockerfile:3") || !strings.Contains(errOut, "about to fail") || !strings.Contains(errOut, "ERROR: ") {
			t.Errorf("kiln --host build of a failing RUN: exit %d, want %d naming Dockerfile:3:\n%s", code, exitFailed, errOut)
		}
	})

	t.Run("failing RUN, quiet", func(t *testing.T) {
		out, errOut, code := kilnClient(t, nil, "", "--host", s.host, "build", "-q", "--network", "none", "-f", filepath.Join(ctxDir, "fail/Dockerfile"), ctxDir)
		if code != exitFailed || out != "" || !strings.Contains(errOut, "ERROR: Dockerfile:3") {
			t.Errorf("kiln --host build -q of a failing RUN: exit %d, stdout %q, want %d and the error on stderr:\n%s", code, out, exitFailed, errOut)
		}
	})

	t.Run("refused flags", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"-o", "type=local,dest=" + t.TempDir()}, "--output"},
			{[]string{"--secret", "id=x,src=" + filepath.Join(ctxDir, "f")}, "--secret"},
			{[]string{"--ssh", "default"}, "--ssh"},
			{[]string{"--push", "-t", "x"}, "--push"},
			{[]string{"--cache-from", "type=local,src=" + t.TempDir()}, "type=local"},
		} {
			_, errOut, code := kilnClient(t, nil, "", append(append([]string{"--host", s.host, "build"}, tc.args...), ctxDir)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("kiln --host build %v: exit %d, want %d naming %s:\n%s", tc.args, code, exitUsage, tc.want, errOut)
			}
		}
		_, errOut, code := kilnClient(t, nil, "", "--host", s.host, "du")
		if code != exitUsage || !strings.Contains(errOut, "local store") {
			t.Errorf("kiln --host du: exit %d, want it refused:\n%s", code, errOut)
		}
	})

	t.Run("interrupt", func(t *testing.T) {
		marker := fmt.Sprintf("%d", time.Now().UnixNano()%1000000+2000000)
		intr := filepath.Join(dir, "intr")
		writeFiles(t, intr, map[string]string{"Dockerfile": "FROM test/busybox:1\nRUN echo is-$((1+1)); sleep " + marker + "\n"})
		cmd := exec.Command(kilnBin, "--host", s.host, "build", "--progress", "plain", "--network", "none", intr)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for wait := time.Now().Add(60 * time.Second); !running(t, "sleep "+marker); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(wait) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the RUN's sleep %s is not running:\n%s\nserver:\n%s", marker, out.String(), s.log)
			}
		}
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("kiln --host build after SIGINT: exit %d, want 130:\n%s", code, out.String())
		}
		deadline := time.Now().Add(60 * time.Second)
		for running(t, "sleep "+marker) || mountsUnder(t, s.root) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("60s after the client's SIGINT: sleep running %v, %d mounts under the store", running(t, "sleep "+marker), mountsUnder(t, s.root))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestRemoteVersion: kiln --host version shows this kiln and the server,
// over a unix socket and over tcp with mutual TLS.
func TestRemoteVersion(t *testing.T) {
	s := startRemoteServer(t)
	out, errOut, code := kilnClient(t, nil, "", "--host", s.host, "version")
	for _, want := range []string{"Client: kiln", "Server: kiln (" + s.host + ")", "API version:", "1.41 (minimum version 1.24)", "Kernel version:"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("kiln --host version: exit %d, no %q:\n%s%s", code, want, out, errOut)
		}
	}
	if strings.Contains(out, "Host:") {
		t.Errorf("kiln --host version printed the local host's features:\n%s", out)
	}

	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	ts := startServe(t, 1, nil, "", "--root", filepath.Join(dir, "root"), "--host", "tcp://127.0.0.1:0",
		"--tlscacert", pki.ca, "--tlscert", pki.serverCert, "--tlskey", pki.serverKey)
	out, errOut, code = kilnClient(t, nil, "", "--host", ts.addrs[0], "--tlscacert", pki.ca, "--tlscert", pki.clientCert, "--tlskey", pki.clientKey, "version", "--json")
	if code != 0 || !strings.Contains(out, `"Name": "kiln"`) {
		t.Errorf("kiln --host tcp:// --tls… version --json: exit %d:\n%s%s", code, out, errOut)
	}
	_, errOut, code = kilnClient(t, nil, "", "--host", ts.addrs[0], "--tlscacert", pki.ca, "version")
	if code == 0 {
		t.Errorf("kiln --host version without a client certificate succeeded against a server requiring one:\n%s", errOut)
	}
}

// failUnserved fails at once when the server answered 501 for an
// endpoint kiln --host needs: every one of them is served.
func failUnserved(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "does not serve this endpoint") {
		t.Fatalf("kiln serve does not serve an endpoint kiln --host uses:\n%s", out)
	}
}

// TestRemoteImagesPushPrune: kiln --host images, push (with this
// machine's credentials for the registry) and prune.
func TestRemoteImagesPushPrune(t *testing.T) {
	s := startRemoteServer(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM test/busybox:1\nRUN echo pushed > /p\n"})
	iid := filepath.Join(t.TempDir(), "iid")
	if _, errOut, code := kilnClient(t, nil, "", "--host", s.host, "build", "--network", "none", "-t", "remote/p:1", "--iidfile", iid, ctxDir); code != 0 {
		t.Fatalf("kiln --host build: exit %d:\n%s", code, errOut)
	}
	id := readID(t, iid)
	short := strings.TrimPrefix(id, "sha256:")[:12]

	t.Run("images", func(t *testing.T) {
		out, errOut, code := kilnClient(t, nil, "", "--host", s.host, "images")
		failUnserved(t, errOut)
		if code != 0 || !strings.Contains(out, "remote/p") || !strings.Contains(out, short) || !strings.HasPrefix(out, "REPOSITORY") {
			t.Errorf("kiln --host images: exit %d, want remote/p as %s:\n%s%s", code, short, out, errOut)
		}
		local, _ := kiln(t, "--root", s.root, "images", "-q")
		out, _, _ = kilnClient(t, nil, "", "--host", s.host, "images", "-q")
		if out != local {
			t.Errorf("kiln --host images -q printed %q, kiln images -q %q", out, local)
		}
	})

	t.Run("push", func(t *testing.T) {
		reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{User: "kiln", Password: "s3cret"})
		cfg := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("kiln:s3cret"))
		if err := os.WriteFile(filepath.Join(cfg, "config.json"), []byte(`{"auths":{"`+reg.Host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		dest := reg.Host + "/team/p:1"
		out, errOut, code := kilnClient(t, []string{"DOCKER_CONFIG=" + cfg}, "", "--host", s.host, "push", "remote/p:1", dest)
		failUnserved(t, errOut)
		if code != 0 || !strings.HasPrefix(out, "sha256:") {
			t.Fatalf("kiln --host push: exit %d:\n%s%s\nserver:\n%s", code, out, errOut, s.log)
		}
		ref, err := name.ParseReference(dest, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "kiln", Password: "s3cret"}))
		if err != nil {
			t.Fatalf("reading the pushed image: %v", err)
		}
		if cn, err := img.ConfigName(); err != nil || cn.String() != id {
			t.Errorf("the registry holds config %v (%v), want the built %s", cn, err, id)
		}
		// without credentials the server's push is refused, and says so
		_, errOut, code = kilnClient(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "", "--host", s.host, "push", "remote/p:1", reg.Host+"/team/p:2")
		if code == 0 {
			t.Errorf("kiln --host push without credentials succeeded:\n%s", errOut)
		}
	})

	t.Run("prune", func(t *testing.T) {
		out, errOut, code := kilnClient(t, nil, "", "--host", s.host, "prune", "--all", "--filter", "until=1s")
		failUnserved(t, errOut)
		if code != 0 || !strings.Contains(out, "Total reclaimed space:") {
			t.Errorf("kiln --host prune: exit %d:\n%s%s", code, out, errOut)
		}
		_, errOut, code = kilnClient(t, nil, "", "--host", s.host, "prune", "--dry-run")
		if code != exitUsage || !strings.Contains(errOut, "--dry-run") {
			t.Errorf("kiln --host prune --dry-run: exit %d, want it refused by name:\n%s", code, errOut)
		}
	})
}
