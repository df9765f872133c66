package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/internal/testutil"
)

// server is a running `kiln serve`.
type server struct {
	cmd   *exec.Cmd
	addrs []string // what it said it listens on
	log   *serveLog
	done  chan error
}

// startServe runs `kiln serve ARGS` (through `sh -c 'PREFIX kiln serve
// ARGS'` when prefix is set, to set up its namespace or environment: the
// prefix ends in exec) and waits until it has
// said it listens on n addresses. The test's cleanup stops it.
func startServe(t *testing.T, n int, extra []*os.File, prefix string, args ...string) *server {
	t.Helper()
	var cmd *exec.Cmd
	if prefix != "" {
		cmd = exec.Command("sh", append([]string{"-c", prefix + ` "$0" serve "$@"`, kilnBin}, args...)...)
	} else {
		cmd = exec.Command(kilnBin, append([]string{"serve"}, args...)...)
	}
	cmd.ExtraFiles = extra
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting kiln serve: %v", err)
	}
	s := &server{cmd: cmd, log: &serveLog{}, done: make(chan error, 1)}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for len(s.addrs) < n {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("kiln serve exited before listening:\n%s", s.log)
			}
			s.log.WriteString(l + "\n")
			if a, ok := strings.CutPrefix(l, "kiln serve: listening on "); ok {
				s.addrs = append(s.addrs, a)
			}
		case <-timeout:
			cmd.Process.Kill()
			t.Fatalf("kiln serve did not say it listens:\n%s", s.log)
		}
	}
	go func() {
		for l := range lines {
			s.log.WriteString(l + "\n")
		}
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			<-s.done
		}
	})
	return s
}

// serveLog is kiln serve's stderr, written by the goroutine reading it.
type serveLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *serveLog) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *serveLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stop sends SIGTERM and returns the exit code.
func (s *server) stop(t *testing.T) int {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	err := <-s.done
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

// unixClient is an HTTP client that dials the socket at path.
// startBuild starts POST /build?networkmode=none on c of a context holding
// only a Dockerfile df; cancel hangs up. The caller closes the body.
func startBuild(t *testing.T, c *http.Client, df string) (resp *http.Response, cancel context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "POST", "http://kiln/build?networkmode=none", bytes.NewReader(tarOf(t, testutil.File("Dockerfile", 0o644, df))))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	resp, err = c.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("POST /build: %v", err)
	}
	return resp, cancel
}

// readUntilRun reads a build's message stream until a stream line holds
// "is-2", which the RUN of the Dockerfiles startBuild is given echoes
// first; serverLog goes with the failure.
func readUntilRun(t *testing.T, body io.Reader, serverLog fmt.Stringer) {
	t.Helper()
	dec := json.NewDecoder(body)
	for {
		var m struct{ Stream string }
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("the build ended before its RUN started: %v\n%s", err, serverLog)
		}
		if strings.Contains(m.Stream, "is-2") {
			return
		}
	}
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
}

func ping(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	resp, err := c.Get(base + "/_ping")
	if err != nil {
		t.Fatalf("GET /_ping: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// docker runs the docker CLI; it returns stdout+stderr and the exit code.
func docker(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running docker: %v", err)
	}
	return string(out), 0
}

func needTool(t *testing.T, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		testutil.SkipHostf(t, "needs %s (Debian package %s)", tool, pkg)
	}
}

// TestServeDockerClients drives kiln serve on a unix socket with the
// docker CLI and docker-py: version shows kiln as the server with its
// kernel and Go versions, info describes the store, ps gets the 501, and
// SIGTERM removes the socket and exits 0.
func TestServeDockerClients(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	archive := filepath.Join(dir, "bb.tar")
	if err := export.OCIArchive(context.Background(), testutil.BusyboxImage(t), archive, []string{"test/busybox:1", "test/bb:2"}); err != nil {
		t.Fatal(err)
	}
	if out, code := kiln(t, "--root", root, "load", "-i", archive); code != 0 {
		t.Fatalf("kiln load: %s", out)
	}
	sock := filepath.Join(dir, "run", "sub", "kiln.sock")
	s := startServe(t, 1, nil, "", "--root", root, "--host", "unix://"+sock)
	host := "unix://" + sock
	if s.addrs[0] != host {
		t.Errorf("listening on %q, want %q", s.addrs[0], host)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("socket directory: %v, %v; want mode 0755", fi.Mode(), err)
	}
	if got := ping(t, unixClient(sock), "http://kiln"); got != "200 OK" {
		t.Errorf("/_ping: %s", got)
	}

	t.Run("docker", func(t *testing.T) {
		needTool(t, "docker", "docker.io")
		var u unix.Utsname
		unix.Uname(&u)
		kernel := unix.ByteSliceToString(u.Release[:])
		out, code := docker(t, "-H", host, "version", "--format", "{{.Server.Platform.Name}}|{{.Server.KernelVersion}}|{{.Server.GoVersion}}|{{.Server.APIVersion}}|{{(index .Server.Components 0).Name}}")
		if want := "kiln|" + kernel + "|" + runtime.Version() + "|1.41|Engine"; code != 0 || strings.TrimSpace(out) != want {
			t.Errorf("docker version: exit %d, %q; want %q", code, out, want)
		}
		out, code = docker(t, "-H", host, "version")
		if code != 0 || !strings.Contains(out, "Server: kiln") {
			t.Errorf("docker version: exit %d:\n%s", code, out)
		}
		out, code = docker(t, "-H", host, "info")
		for _, want := range []string{"Docker Root Dir: " + root, "Storage Driver: overlayfs", "Images: 1", "Containers: 0", "Kernel Version: " + kernel} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("docker info: exit %d, no %q in:\n%s", code, want, out)
			}
		}
		out, code = docker(t, "-H", host, "ps")
		if code == 0 || !strings.Contains(out, "kiln serves builds and images only: GET /containers/json is not implemented") {
			t.Errorf("docker ps: exit %d, want non-zero with the 501 message:\n%s", code, out)
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
v = c.version()
print(json.dumps([v["Platform"]["Name"], v["ApiVersion"], c.info()["DockerRootDir"]]))
`, host).CombinedOutput()
		var got []string
		if err != nil || json.Unmarshal(out, &got) != nil || strings.Join(got, " ") != "kiln 1.41 "+root {
			t.Errorf("docker-py: %v:\n%s", err, out)
		}
	})

	if code := s.stop(t); code != 0 {
		t.Errorf("kiln serve exited %d after SIGTERM, want 0:\n%s", code, s.log)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket is still there after SIGTERM: %v", err)
	}
}

// TestServeSocketMode: the socket is 0600 and root's without a kiln
// group, 0660 and the group's with one. /etc/group is replaced in a
// mount namespace of kiln serve's own, not on the host.
func TestServeSocketMode(t *testing.T) {
	needRoot(t)
	needTool(t, "unshare", "util-linux")
	for _, tc := range []struct {
		name  string
		group string
		mode  fs.FileMode
		gid   uint32
	}{
		{"no kiln group", "root:x:0:\n", 0o600, 0},
		{"kiln group", "root:x:0:\nkiln:x:4242:\n", 0o660, 4242},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			grp := filepath.Join(dir, "group")
			if err := os.WriteFile(grp, []byte(tc.group), 0o644); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "kiln.sock")
			// a stale socket, as a killed server leaves it: replaced
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
			s := startServe(t, 1, nil, fmt.Sprintf(`exec unshare -m --propagation private sh -c 'mount --bind %s /etc/group && exec "$0" "$@"'`, grp),
				"--root", filepath.Join(dir, "root"), "--host", "unix://"+sock)
			var st unix.Stat_t
			if err := unix.Lstat(sock, &st); err != nil {
				t.Fatal(err)
			}
			if got := fs.FileMode(st.Mode & 0o7777); got != tc.mode || st.Uid != 0 || st.Gid != tc.gid {
				t.Errorf("socket mode %v owner %d:%d, want %v 0:%d", got, st.Uid, st.Gid, tc.mode, tc.gid)
			}
			if got := ping(t, unixClient(sock), "http://kiln"); got != "200 OK" {
				t.Errorf("/_ping: %s\n%s", got, s.log)
			}
		})
	}
}

// TestServeRefusesBusySocket: a socket another server answers on is not
// taken over.
func TestServeRefusesBusySocket(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "kiln.sock")
	startServe(t, 1, nil, "", "--root", filepath.Join(dir, "root"), "--host", "unix://"+sock)
	out, code := kiln(t, "serve", "--root", filepath.Join(dir, "root"), "--host", "unix://"+sock)
	if code != exitUsage || !strings.Contains(out, "a server already answers there") {
		t.Errorf("second kiln serve on the same socket: exit %d:\n%s", code, out)
	}
}

// TestServeTLS: on tcp, kiln serve with a CA lets in only clients with a
// certificate that CA signed; a non-loopback address without one is
// refused.
func TestServeTLS(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	s := startServe(t, 1, nil, "", "--root", filepath.Join(dir, "root"), "--host", "tcp://127.0.0.1:0",
		"--tlscacert", pki.ca, "--tlscert", pki.serverCert, "--tlskey", pki.serverKey)
	addr, ok := strings.CutPrefix(s.addrs[0], "tcp://")
	if !ok {
		t.Fatalf("listening on %q", s.addrs[0])
	}
	base := "https://" + addr

	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}}}
	if got := ping(t, withCert, base); got != "200 OK" {
		t.Errorf("/_ping with a client certificate: %s", got)
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	if resp, err := noCert.Get(base + "/_ping"); err == nil {
		resp.Body.Close()
		t.Errorf("/_ping without a client certificate answered %s", resp.Status)
	}
	other := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.stranger}}}}
	if resp, err := other.Get(base + "/_ping"); err == nil {
		resp.Body.Close()
		t.Errorf("/_ping with a certificate of another CA answered %s", resp.Status)
	}

	t.Run("docker", func(t *testing.T) {
		needTool(t, "docker", "docker.io")
		out, code := docker(t, "-H", s.addrs[0], "--tlsverify", "--tlscacert", pki.ca, "--tlscert", pki.clientCert, "--tlskey", pki.clientKey,
			"version", "--format", "{{.Server.Platform.Name}}")
		if code != 0 || strings.TrimSpace(out) != "kiln" {
			t.Errorf("docker --tlsverify version: exit %d:\n%s", code, out)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"all interfaces, no TLS", []string{"--host", "tcp://0.0.0.0:0"}, "--tlscacert, --tlscert and --tlskey"},
		{"all interfaces, no CA", []string{"--host", "tcp://:0", "--tlscert", pki.serverCert, "--tlskey", pki.serverKey}, "reachable from other machines"},
		{"key without cert", []string{"--host", "tcp://127.0.0.1:0", "--tlskey", pki.serverKey}, "--tlscert and --tlskey go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := kiln(t, append([]string{"serve", "--root", filepath.Join(dir, "root")}, tc.args...)...)
			if code != exitUsage || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, exitUsage, tc.want, out)
			}
		})
	}
}

// TestServeSocketActivation: with LISTEN_PID and LISTEN_FDS, as systemd
// sets them, kiln serve serves the inherited socket instead of --host,
// and leaves its file to systemd.
func TestServeSocketActivation(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "activated.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	notUsed := filepath.Join(dir, "not-used.sock")
	// sh's $$ is the pid kiln gets through exec, as systemd's LISTEN_PID
	s := startServe(t, 1, []*os.File{f}, "LISTEN_PID=$$ LISTEN_FDS=1 exec", "--root", filepath.Join(dir, "root"), "--host", "unix://"+notUsed)
	if s.addrs[0] != "unix://"+sock {
		t.Errorf("listening on %q, want the activated unix://%s", s.addrs[0], sock)
	}
	if got := ping(t, unixClient(sock), "http://kiln"); got != "200 OK" {
		t.Errorf("/_ping on the activated socket: %s", got)
	}
	if _, err := os.Lstat(notUsed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--host was listened on despite activation: %v", err)
	}
	if code := s.stop(t); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, s.log)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("the activated socket's file is systemd's to remove, kiln removed it: %v", err)
	}
}

// testPKI is a CA with a server and a client certificate, and a client
// certificate of another CA.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	pool                                             *x509.CertPool
	client, stranger                                 tls.Certificate
}

func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	var p testPKI
	caKey := newKey()
	ca := issue(caTmpl("kiln test CA"), nil, nil, caKey)
	p.ca = write("ca.pem", "CERTIFICATE", ca.Raw)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)

	sk := newKey()
	sc := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "kiln serve"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey, sk)
	p.serverCert, p.serverKey = write("server.pem", "CERTIFICATE", sc.Raw), write("server-key.pem", "EC PRIVATE KEY", keyDER(sk))

	clientTmpl := func() *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "client"}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	ck := newKey()
	cc := issue(clientTmpl(), ca, caKey, ck)
	p.clientCert, p.clientKey = write("client.pem", "CERTIFICATE", cc.Raw), write("client-key.pem", "EC PRIVATE KEY", keyDER(ck))
	p.client = tls.Certificate{Certificate: [][]byte{cc.Raw}, PrivateKey: ck}

	otherKey := newKey()
	other := issue(caTmpl("another CA"), nil, nil, otherKey)
	ok := newKey()
	oc := issue(clientTmpl(), other, otherKey, ok)
	p.stranger = tls.Certificate{Certificate: [][]byte{oc.Raw}, PrivateKey: ok}
	return p
}
