package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// gitSSHServer is a test repository (testutil.NewGitRepo) served by a real
// sshd that lets in the holder of key, which a real ssh-agent holds.
type gitSSHServer struct {
	repo  *testutil.GitRepo
	url   string // ssh://root@127.0.0.1:PORT/…/repo.git
	key   string // the private key file
	agent string // the agent's socket
}

func newGitSSHServer(t *testing.T) *gitSSHServer {
	t.Helper()
	needRoot(t)
	repo := testutil.NewGitRepo(t)
	key := testutil.SSHKey(t, t.TempDir(), "deploy")
	port := testutil.SSHD(t, key+".pub")
	agent := testutil.SSHAgent(t)
	testutil.SSHAdd(t, agent, key)
	return &gitSSHServer{
		repo:  repo,
		url:   fmt.Sprintf("ssh://root@127.0.0.1:%d%s/repo.git", port, repo.Base),
		key:   key,
		agent: agent,
	}
}

// kilnNoAgent runs kiln with no SSH_AUTH_SOCK (and no GIT_SSH*, an empty
// HOME for git's config): as the sshd lets in the test key only, what
// gets in can only be the agent given with --ssh.
func kilnNoAgent(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SSH_AUTH_SOCK=") && !strings.HasPrefix(e, "HOME=") && !strings.HasPrefix(e, "GIT_SSH") {
			env = append(env, e)
		}
	}
	cmd := exec.Command(kilnBin, args...)
	cmd.Env = append(env, "HOME="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running kiln: %v", err)
	}
	return out.String(), code
}

// noKeyLeak fails if the key or the agent's path shows in the log or any
// file below dirs.
func (s *gitSSHServer) noKeyLeak(t *testing.T, log string, dirs ...string) {
	t.Helper()
	secret := []string{keyBody(t, s.key), s.agent}
	for _, x := range secret {
		if strings.Contains(log, x) {
			t.Errorf("the build log shows %q:\n%s", x, log)
		}
	}
	for _, d := range dirs {
		grepTree(t, d, secret...)
	}
}

// TestAddGitSSH: ADD of a git source over ssh fetches through the build's
// --ssh default (an agent socket, or a key file), not through kiln's own
// environment; the step's key does not depend on which; without an agent
// the build fails naming the line and --ssh.
func TestAddGitSSH(t *testing.T) {
	s := newGitSSHServer(t)
	ctxDir := writeDockerfile(t, fmt.Sprintf("FROM scratch\nADD %s#v1:sub /dst/\n", s.url))
	root := t.TempDir()
	for _, tt := range []struct {
		name, flag string
		root       string
	}{
		{"agent socket", "default=" + s.agent, root},
		{"key file", "default=" + s.key, t.TempDir()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rootfs")
			log, code := kilnNoAgent(t, "build", "--root", tt.root, "--progress=plain", "--ssh", tt.flag, "-o", "type=local,dest="+out, ctxDir)
			if code != 0 {
				t.Fatalf("build failed:\n%s", log)
			}
			if got := readFile(t, filepath.Join(out, "dst/a.txt")); got != "a1\n" {
				t.Errorf("/dst/a.txt = %q, want the v1 content", got)
			}
			for _, p := range []string{"dst/.git", "dst/README", "dst/b.txt"} {
				if _, err := os.Lstat(filepath.Join(out, p)); err == nil {
					t.Errorf("/%s exists", p)
				}
			}
			s.noKeyLeak(t, log, tt.root, out)
			if left, _ := filepath.Glob(filepath.Join(tt.root, "tmp", "*", "ssh-*")); len(left) > 0 {
				t.Errorf("agent sockets left in the store: %v", left)
			}
		})
	}

	// The same source with the agent given another way: cached, as the
	// key names the remote and the commit, never the agent.
	log, code := kilnNoAgent(t, "build", "--root", root, "--progress=plain", "--ssh", "default="+s.key, ctxDir)
	if code != 0 {
		t.Fatalf("rebuild failed:\n%s", log)
	}
	if got := firstRerun(log); got != "" {
		t.Errorf("rebuild with a key file instead of the agent reran %q:\n%s", got, log)
	}
	s.noKeyLeak(t, log, root)

	for _, tt := range []struct {
		name  string
		flags []string
	}{
		{"no --ssh", nil},
		{"no default", []string{"--ssh", "deploy=" + s.key}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build", "--root", t.TempDir(), "--progress=plain"}, tt.flags...)
			log, code := kilnNoAgent(t, append(args, ctxDir)...)
			for _, want := range []string{"Dockerfile:2", "--ssh default"} {
				if code == 0 || !strings.Contains(log, want) {
					t.Errorf("build: exit %d, want a failure naming %q:\n%s", code, want, log)
				}
			}
			s.noKeyLeak(t, log)
		})
	}
}

// TestRemoteContextSSH: a git build context over ssh, as the CONTEXT
// argument and as --build-context, is fetched through --ssh default.
func TestRemoteContextSSH(t *testing.T) {
	s := newGitSSHServer(t)
	t.Run("context", func(t *testing.T) {
		out, root := filepath.Join(t.TempDir(), "rootfs"), t.TempDir()
		log, code := kilnNoAgent(t, "build", "--root", root, "--progress=plain", "--ssh", "default="+s.key, "-o", "type=local,dest="+out, s.url+"#v1:sub")
		if code != 0 {
			t.Fatalf("build failed:\n%s", log)
		}
		if got := readFile(t, filepath.Join(out, "ctx/a.txt")); got != "a1\n" {
			t.Errorf("/ctx/a.txt = %q, want the v1 content", got)
		}
		s.noKeyLeak(t, log, root, out)
	})
	t.Run("context without --ssh", func(t *testing.T) {
		log, code := kilnNoAgent(t, "build", "--root", t.TempDir(), "--progress=plain", s.url+"#v1:sub")
		if code == 0 || !strings.Contains(log, "--ssh default") {
			t.Errorf("build: exit %d, want a failure naming --ssh default:\n%s", code, log)
		}
	})
	t.Run("build-context", func(t *testing.T) {
		ctxDir := t.TempDir()
		writeTree(t, ctxDir, map[string]string{"Dockerfile": "FROM scratch\nCOPY --from=src a.txt /from-git\n"})
		out, root := filepath.Join(t.TempDir(), "rootfs"), t.TempDir()
		log, code := kilnNoAgent(t, "build", "--root", root, "--progress=plain", "--ssh", "default="+s.agent, "-o", "type=local,dest="+out,
			"--build-context", "src="+s.url+"#v1:sub", ctxDir)
		if code != 0 {
			t.Fatalf("build failed:\n%s", log)
		}
		if got := readFile(t, filepath.Join(out, "from-git")); got != "a1\n" {
			t.Errorf("/from-git = %q, want the tag's a.txt", got)
		}
		s.noKeyLeak(t, log, root, out)
	})
}
