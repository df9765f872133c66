package testutil

import (
	"archive/tar"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// needTool skips (SkipHost) when the program is not installed; pkg is the
// Debian package that has it.
func needTool(t testing.TB, prog, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		SkipHostf(t, "%s is missing: apt-get install -y %s", prog, pkg)
	}
	return p
}

// shortTempDir is a temporary directory whose path fits a unix socket
// address, which test names make t.TempDir's too long for.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kiln-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// SSHKey generates an unencrypted ed25519 key pair in dir and returns the
// private key's path (the public key is that path + ".pub").
func SSHKey(t testing.TB, dir, name string) string {
	t.Helper()
	keygen := needTool(t, "ssh-keygen", "openssh-client")
	p := filepath.Join(dir, name)
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return p
}

// SSHAgent starts a real ssh-agent for the test and returns its socket.
func SSHAgent(t testing.TB) string {
	t.Helper()
	bin := needTool(t, "ssh-agent", "openssh-client")
	sock := filepath.Join(shortTempDir(t), "agent.sock")
	cmd := exec.Command(bin, "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting ssh-agent: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitFor(t, "ssh-agent", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return sock
}

// SSHAdd adds the key file to the agent at sock with ssh-add.
func SSHAdd(t testing.TB, sock, key string) {
	t.Helper()
	bin := needTool(t, "ssh-add", "openssh-client")
	cmd := exec.Command(bin, key)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
}

// SSHFingerprint is the SHA256 fingerprint of a key file, as ssh-add -l
// prints it.
func SSHFingerprint(t testing.TB, key string) string {
	t.Helper()
	keygen := needTool(t, "ssh-keygen", "openssh-client")
	out, err := exec.Command(keygen, "-l", "-E", "sha256", "-f", key).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -l: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -l printed %q", out)
	}
	return f[1]
}

// SSHD starts a real sshd, as root, on 127.0.0.1 at a free port, letting
// in the holder of the key whose public half is in pubKeyFile, as any
// user; it returns the port. Commands run as that user on this host.
func SSHD(t testing.TB, pubKeyFile string) int {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipHost(t, "sshd needs root")
	}
	bin := "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil {
		SkipHost(t, "sshd is missing: apt-get install -y openssh-server")
	}
	dir := t.TempDir()
	hostKey := SSHKey(t, dir, "host_key")
	auth := filepath.Join(dir, "authorized_keys")
	pub, err := os.ReadFile(pubKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd refuses to start without its privilege separation directory,
	// which the package's service would have made.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`, port, hostKey, filepath.Join(dir, "sshd.pid"), auth)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-D", "-e", "-f", cfg)
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("sshd log:\n%s", log)
		}
	})
	waitFor(t, "sshd", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return port
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if ok() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not come up", what)
}

var lddPath = regexp.MustCompile(`(/\S+) \(0x`)

// HostBinariesLayer is a layer holding host programs with the shared
// libraries ldd lists for them, at their host paths (symlinks resolved:
// each library is a regular file). Each entry is PATH, or DEST=PATH to put
// the program somewhere else in the layer. Tests use it to add tools
// (ssh, git) to the busybox base without a package archive.
func HostBinariesLayer(t testing.TB, bins ...string) v1.Layer {
	t.Helper()
	files := map[string]string{} // in the layer → on the host
	for _, b := range bins {
		dest, src, ok := strings.Cut(b, "=")
		if !ok {
			src = dest
		}
		if _, err := os.Stat(src); err != nil {
			SkipHostf(t, "%s is missing on this host: %v", src, err)
		}
		files[dest] = src
		out, err := exec.Command("ldd", src).Output()
		if err != nil {
			continue // static
		}
		for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
			files[m[1]] = m[1]
		}
	}
	dests := make([]string, 0, len(files))
	for d := range files {
		dests = append(dests, d)
	}
	slices.Sort(dests)
	var entries []TarEntry
	dirs := map[string]bool{}
	for _, d := range dests {
		var parents []string
		for p := path.Dir(d); p != "/" && !dirs[p]; p = path.Dir(p) {
			dirs[p] = true
			parents = append(parents, p)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			entries = append(entries, Dir(strings.TrimPrefix(parents[i], "/")+"/", 0o755))
		}
		body, err := os.ReadFile(files[d])
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, File(strings.TrimPrefix(d, "/"), 0o755, string(body)))
	}
	return StreamedLayer(t, func(tw *tar.Writer) error { return WriteEntries(tw, entries) })
}
