package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/sshforward"
)

func TestGitUsesSSH(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{"ssh://git@h/r.git#v1", true},
		{"git@github.com:moby/buildkit.git#main", true},
		{"https://h/r.git", false},
		{"git://127.0.0.1:9418/repo", false},
	}
	for _, tt := range tests {
		g, ok, err := ParseGit(tt.src)
		if !ok || err != nil {
			t.Fatalf("ParseGit(%q): %v, %v", tt.src, ok, err)
		}
		if got := g.UsesSSH(); got != tt.want {
			t.Errorf("UsesSSH(%q) = %v, want %v", tt.src, got, tt.want)
		}
	}
}

// TestGitSSHAgent resolves and fetches a repository from a real sshd
// through a --ssh agent (a key file kiln holds), checking host keys as
// gitSSHCommand says: an unknown host is accepted and not recorded, a
// known host showing another key is refused. A build with --ssh for
// other IDs only is refused before git runs.
func TestGitSSHAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "sshd needs root")
	}
	repo := testutil.NewGitRepo(t)
	dir := t.TempDir()
	key := testutil.SSHKey(t, dir, "deploy")
	port := testutil.SSHD(t, key+".pub")
	g, _, err := ParseGit(fmt.Sprintf("ssh://root@127.0.0.1:%d%s/repo.git#v1:sub", port, repo.Base))
	if err != nil {
		t.Fatal(err)
	}
	agents, err := sshforward.Parse([]string{"default=" + key}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSH_AUTH_SOCK", "")
	kh := filepath.Join(dir, "known_hosts")
	old := userKnownHosts
	userKnownHosts = kh
	t.Cleanup(func() { userKnownHosts = old })
	ctx := context.Background()
	sockDir := t.TempDir()
	opt := WithSSHAgents(agents, sockDir)

	res, err := ResolveGit(ctx, g, "", opt)
	if err != nil {
		t.Fatalf("resolving over ssh: %v", err)
	}
	if res.Commit != repo.V1 {
		t.Errorf("resolved %s, want %s", res.Commit, repo.V1)
	}
	checkout := filepath.Join(t.TempDir(), "co")
	if err := Git(ctx, g, res, checkout, false, opt); err != nil {
		t.Fatalf("fetching over ssh: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(checkout, "sub", "a.txt")); err != nil || string(b) != "a1\n" {
		t.Errorf("sub/a.txt = %q, %v", b, err)
	}
	if _, err := os.Stat(kh); err == nil {
		t.Error("the unknown host's key was recorded in known_hosts")
	}
	if left, _ := os.ReadDir(sockDir); len(left) > 0 {
		t.Errorf("left in the socket directory: %v", left)
	}

	// The host known with another key: refused.
	other := testutil.SSHKey(t, dir, "other")
	pub, err := os.ReadFile(other + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	if err := os.WriteFile(kh, []byte(fmt.Sprintf("[127.0.0.1]:%d %s %s\n", port, f[0], f[1])), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveGit(ctx, g, "", opt); err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("resolving from a host known with another key: %v, want a host key failure", err)
	}

	// --ssh for another ID only.
	others := sshforward.Agents{"deploy": agents[sshforward.DefaultID]}
	if _, err := ResolveGit(ctx, g, "", WithSSHAgents(others, sockDir)); err == nil || !strings.Contains(err.Error(), "add --ssh default") {
		t.Errorf("resolving with --ssh deploy only: %v, want a refusal naming --ssh default", err)
	}
}
