package sshforward

import (
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/kiln-build/kiln/internal/testutil"
)

// sshAdd runs ssh-add with args against the agent at sock.
func sshAdd(t *testing.T, sock string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("ssh-add", args...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// serve listens for a on a socket in a fresh directory and returns its
// path.
func serve(t *testing.T, a *Agent) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kiln-sshfwd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "agent.sock")
	s, err := a.Listen(p, os.Getuid(), os.Getgid(), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return p
}

// TestForward checks, with a real ssh-agent and ssh-add, that both kinds
// of source list their keys through the socket and sign with them, and
// that nothing can change the agent through it.
func TestForward(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := testutil.SSHKey(t, dir, "one"), testutil.SSHKey(t, dir, "two")
	upstream := testutil.SSHAgent(t)
	testutil.SSHAdd(t, upstream, k1)
	tests := []struct {
		name string
		spec string
		want []string // fingerprints listed
	}{
		{"default is SSH_AUTH_SOCK", "default", []string{k1}},
		{"socket", "mine=" + upstream, []string{k1}},
		{"key files", "keys=" + k1 + "," + k2, []string{k1, k2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agents, err := Parse([]string{tt.spec}, func(k string) string {
				if k == "SSH_AUTH_SOCK" {
					return upstream
				}
				return ""
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(agents) != 1 {
				t.Fatalf("got %d agents", len(agents))
			}
			var a *Agent
			for _, a = range agents {
			}
			sock := serve(t, a)
			out, err := sshAdd(t, sock, "-l")
			if err != nil {
				t.Fatalf("ssh-add -l: %v\n%s", err, out)
			}
			for _, k := range tt.want {
				if fp := testutil.SSHFingerprint(t, k); !strings.Contains(out, fp) {
					t.Errorf("ssh-add -l does not list %s (%s):\n%s", filepath.Base(k), fp, out)
				}
			}
			if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != len(tt.want) {
				t.Errorf("ssh-add -l lists %d keys, want %d:\n%s", n, len(tt.want), out)
			}

			// Signing works, with the key the agent holds.
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			client := agent.NewClient(c)
			keys, err := client.List()
			if err != nil || len(keys) == 0 {
				t.Fatalf("listing keys: %v %v", keys, err)
			}
			data := make([]byte, 32)
			rand.Read(data)
			sig, err := client.Sign(keys[0], data)
			if err != nil {
				t.Fatalf("signing: %v", err)
			}
			if err := keys[0].Verify(data, sig); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}

			// Read-only: no add, remove, remove-all, lock.
			for _, args := range [][]string{{k2}, {"-d", k1 + ".pub"}, {"-D"}} {
				if out, err := sshAdd(t, sock, args...); err == nil {
					t.Errorf("ssh-add %v through the forwarded socket succeeded:\n%s", args, out)
				}
			}
			if err := client.Lock([]byte("pw")); err == nil {
				t.Error("locking the agent through the forwarded socket succeeded")
			}
			if _, err := client.Extension("session-bind@openssh.com", nil); err == nil {
				t.Error("an extension went through the forwarded socket")
			}
		})
	}
	// The host agent still has exactly its key.
	if out, err := sshAdd(t, upstream, "-l"); err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, testutil.SSHFingerprint(t, k1)) {
		t.Errorf("host agent changed: %v\n%s", err, out)
	}
}

// TestListenLongPath: a socket path longer than a socket address holds
// (a deep store) still works, and the socket gets the owner and mode asked
// for.
func TestListenLongPath(t *testing.T) {
	dir := t.TempDir()
	k := testutil.SSHKey(t, dir, "k")
	agents, err := Parse([]string{"default=" + k}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(dir, strings.Repeat("d", 100), strings.Repeat("e", 50))
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(deep, "agent.sock")
	s, err := agents["default"].Listen(p, os.Getuid(), os.Getgid(), 0o640)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("socket mode %v, want a socket with 0640", fi.Mode())
	}
	// connect through a short path to the same directory
	if err := os.Symlink(deep, filepath.Join(dir, "s")); err != nil {
		t.Fatal(err)
	}
	out, err := sshAdd(t, filepath.Join(dir, "s", "agent.sock"), "-l")
	if err != nil || !strings.Contains(out, testutil.SSHFingerprint(t, k)) {
		t.Errorf("ssh-add -l: %v\n%s", err, out)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
}

// TestCloseEndsConnections: a client the step left connected (idle, or
// waiting on an answer) does not keep Close waiting, and is cut off.
func TestCloseEndsConnections(t *testing.T) {
	dir := t.TempDir()
	k := testutil.SSHKey(t, dir, "k")
	upstream := testutil.SSHAgent(t)
	testutil.SSHAdd(t, upstream, k)
	for _, spec := range []string{"default=" + k, "default=" + upstream} {
		agents, err := Parse([]string{spec}, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		sdir, err := os.MkdirTemp("", "kiln-sshfwd-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(sdir)
		s, err := agents["default"].Listen(filepath.Join(sdir, "a.sock"), 0, 0, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("unix", filepath.Join(sdir, "a.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Half a request: the server waits for the rest.
		if _, err := c.Write([]byte{0, 0, 0, 9, 11}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if n, err := c.Read(buf); err == nil {
			t.Errorf("%s: connection still answers after Close (%d bytes)", spec, n)
		}
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	key := testutil.SSHKey(t, dir, "k")
	enc := filepath.Join(dir, "enc")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", enc).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	sock := testutil.SSHAgent(t)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("not a key"), 0o600)
	noenv := func(string) string { return "" }
	tests := []struct {
		specs []string
		want  string
	}{
		{[]string{"default"}, "SSH_AUTH_SOCK is not set"},
		{[]string{"=x"}, "want ID"},
		{[]string{"a=" + key, "a=" + key}, "given twice"},
		{[]string{"a=" + enc}, "protected by a passphrase"},
		{[]string{"a=" + sock + "," + key}, "cannot be combined"},
		{[]string{"a=" + key + ",," + key}, "empty path"},
		{[]string{"a=" + filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"a=" + junk}, "reading the private key"},
		{[]string{"a=" + dir}, "neither an agent socket nor a private key"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.specs, noenv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q): %v, want an error with %q", tt.specs, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-pass") {
			t.Errorf("error shows the passphrase: %v", err)
		}
	}
}

// The key material is parsed when the flag is: a bad one fails the build
// before any work. This makes sure ssh can parse what ssh-keygen writes.
func TestParseKeyTypes(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		p := filepath.Join(dir, typ)
		if out, err := exec.Command("ssh-keygen", "-q", "-t", typ, "-N", "", "-f", p).CombinedOutput(); err != nil {
			testutil.SkipHostf(t, "ssh-keygen -t %s: %v\n%s", typ, err, out)
		}
		a, err := Parse([]string{"k=" + p}, func(string) string { return "" })
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		keys, err := a["k"].keys.List()
		if err != nil || len(keys) != 1 {
			t.Fatalf("%s: %v %v", typ, keys, err)
		}
		pub, _ := os.ReadFile(p + ".pub")
		want, _, _, _, err := ssh.ParseAuthorizedKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if string(keys[0].Marshal()) != string(want.Marshal()) {
			t.Errorf("%s: agent holds another key", typ)
		}
	}
}
