package registrytest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kiln-build/kiln/internal/testutil"
)

// DistributionBinary is Debian's build of the distribution registry
// (package docker-registry), what most private registries run.
const DistributionBinary = "/usr/bin/docker-registry"

// Distribution is a running docker-registry.
type Distribution struct {
	// Host is 127.0.0.1:PORT.
	Host string
	// CA signed the server certificate (nil for plain HTTP).
	CA *CA
	// User and Password are the htpasswd account (empty without auth).
	User, Password string
	log            *syncBuffer
}

// Log is the registry's output so far, for failure messages.
func (d *Distribution) Log() string { return d.log.String() }

// syncBuffer is a buffer the registry's output goroutine writes while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// DistributionOptions choose the shape of the registry.
type DistributionOptions struct {
	// TLS serves HTTPS with a certificate from a new CA.
	TLS bool
	// User and Password turn on htpasswd (basic) authentication.
	User, Password string
}

// StartDistribution starts docker-registry on a free loopback port for the
// test, storing into a temporary directory, and waits until it answers. It
// skips the test when the binary is missing.
func StartDistribution(t testing.TB, o DistributionOptions) *Distribution {
	t.Helper()
	if _, err := os.Stat(DistributionBinary); err != nil {
		testutil.SkipHostf(t, "needs Debian's docker-registry (%s): apt-get install docker-registry (make deps)", DistributionBinary)
	}
	dir := t.TempDir()
	d := &Distribution{User: o.User, Password: o.Password}
	var extra strings.Builder
	if o.TLS {
		d.CA = NewCA(t)
		c, k := d.CA.Issue(t, false, "127.0.0.1", "localhost")
		WriteFile(t, filepath.Join(dir, "server.crt"), c)
		WriteFile(t, filepath.Join(dir, "server.key"), k)
		fmt.Fprintf(&extra, "  tls:\n    certificate: %s\n    key: %s\n", filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	}
	auth := ""
	if o.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		WriteFile(t, filepath.Join(dir, "htpasswd"), []byte(o.User+":"+string(hash)+"\n"))
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: kiln-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}

	// The port is chosen by the kernel, then released for the registry to
	// bind: another process may take it meanwhile, so try a few times.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		d.Host = fmt.Sprintf("127.0.0.1:%d", port)
		cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: kiln-test
%s%s`, filepath.Join(dir, "data"), d.Host, extra.String(), auth)
		cfgPath := filepath.Join(dir, "config.yml")
		WriteFile(t, cfgPath, []byte(cfg))
		if lastErr = d.start(t, cfgPath); lastErr == nil {
			return d
		}
	}
	t.Fatalf("starting docker-registry: %v", lastErr)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (d *Distribution) start(t testing.TB, cfgPath string) error {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, DistributionBinary, "serve", cfgPath)
	d.log = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		cancel()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cancel()
		<-exited
	}

	client := &http.Client{Timeout: 2 * time.Second}
	scheme := "http"
	if d.CA != nil {
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: d.CA.Pool()}}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			cancel()
			return fmt.Errorf("docker-registry exited (%v):\n%s", err, d.log)
		default:
		}
		// Until it says so, whatever answers on the port may be another
		// process that took it first.
		if !strings.Contains(d.log.String(), "listening on "+d.Host) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		resp, err := client.Get(scheme + "://" + d.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				t.Cleanup(stop)
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return fmt.Errorf("docker-registry did not answer on %s within 20s:\n%s", d.Host, d.log)
}
