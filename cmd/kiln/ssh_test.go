package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testutil"
)

// sshBase pushes the busybox base with the host's ssh, ssh-add and git
// (and their libraries) added, and returns its name.
func sshBase(t *testing.T, reg string) string {
	t.Helper()
	l := testutil.HostBinariesLayer(t, "/usr/bin/ssh-add", "/usr/bin/ssh", "/usr/bin/git", "/usr/lib/git-core/git=/usr/bin/git")
	return testutil.Push(t, testutil.ImageOn(t, testutil.BusyboxImage(t), l), reg+"/test/ssh-tools:latest")
}

// keyBody is a line from the middle of a private key file's base64: if it
// shows up anywhere, key material leaked.
func keyBody(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(key)
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 4 {
		t.Fatalf("unexpected key file:\n%s", b)
	}
	return lines[len(lines)/2]
}

// grepTree fails the test if any file below dir holds one of needles.
func grepTree(t *testing.T, dir string, needles ...string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s holds %q", p, n)
			}
		}
		return nil
	})
}

const sshDockerfile = `FROM {{BASE}}
RUN --mount=type=ssh ssh-add -l > /keys && echo "$SSH_AUTH_SOCK" > /sock
RUN --mount=type=ssh,id=other,target=/tmp/agent,mode=0660,uid=1000,gid=1001 stat -c '%u %g %a %F' /tmp/agent > /other.stat && SSH_AUTH_SOCK=/tmp/agent ssh-add -l > /other.keys
RUN --mount=type=ssh,id=missing,required=false sh -c 'test ! -e /run/buildkit/ssh_agent.0 && echo "$SSH_AUTH_SOCK" > /missing.sock'
USER 1000
RUN --mount=type=ssh,uid=1000 ssh-add -l > /tmp/user.keys
RUN --mount=type=ssh sh -c 'ssh-add -l; echo $? > /tmp/denied'
`

// TestSSHMount forwards a real ssh-agent (as a socket, and its key as a
// key file) into RUN steps: ssh-add -l lists the key there, the socket has
// the owner and mode asked for, a user it does not belong to cannot use
// it, a missing optional agent leaves no socket, and neither the key nor
// the host socket's path reaches the image, the store or the log. A
// rebuild with the agent at another path is fully cached.
func TestSSHMount(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base := sshBase(t, reg)
	keys := t.TempDir()
	k1, k2 := testutil.SSHKey(t, keys, "first"), testutil.SSHKey(t, keys, "second")
	agent := testutil.SSHAgent(t)
	testutil.SSHAdd(t, agent, k1)
	fp1, fp2 := testutil.SSHFingerprint(t, k1), testutil.SSHFingerprint(t, k2)

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Dockerfile"), strings.ReplaceAll(sshDockerfile, "{{BASE}}", base))
	root, out := t.TempDir(), t.TempDir()
	cmd := exec.Command(kilnBin, "build", "--root", root, "--progress=plain", "--ssh", "default", "--ssh", "other="+k2,
		"-o", "type=local,dest="+out, dir)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agent)
	o, err := cmd.CombinedOutput()
	log := string(o)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil {
			t.Errorf("reading %s: %v", p, err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := read("keys"); !strings.Contains(got, fp1) || strings.Count(got, "\n") != 0 {
		t.Errorf("ssh-add -l through --ssh default: %q, want %s alone", got, fp1)
	}
	if got := read("sock"); got != "/run/buildkit/ssh_agent.0" {
		t.Errorf("SSH_AUTH_SOCK = %q, want /run/buildkit/ssh_agent.0", got)
	}
	if got := read("other.stat"); got != "1000 1001 660 socket" {
		t.Errorf("socket at target: %q, want 1000 1001 660 socket", got)
	}
	if got := read("other.keys"); !strings.Contains(got, fp2) || strings.Contains(got, fp1) {
		t.Errorf("ssh-add -l through --ssh other=KEYFILE: %q, want %s alone", got, fp2)
	}
	if got := read("missing.sock"); got != "/run/buildkit/ssh_agent.0" {
		t.Errorf("SSH_AUTH_SOCK without the optional agent = %q, want /run/buildkit/ssh_agent.0 as BuildKit sets", got)
	}
	if got := read("tmp/user.keys"); !strings.Contains(got, fp1) {
		t.Errorf("ssh-add -l as the socket's owner: %q, want %s", got, fp1)
	}
	if got := read("tmp/denied"); got != "2" {
		t.Errorf("ssh-add -l as a user the socket is not for exited %q, want 2 (cannot connect)", got)
	}
	if _, err := os.Lstat(filepath.Join(out, "run")); err == nil {
		t.Error("the mount point /run reached the image")
	}
	secretBits := []string{keyBody(t, k1), keyBody(t, k2), agent, k2}
	for _, s := range secretBits {
		if strings.Contains(log, s) {
			t.Errorf("the build log shows %q:\n%s", s, log)
		}
	}
	grepTree(t, root, secretBits...)
	grepTree(t, out, secretBits...)
	if left, _ := filepath.Glob(filepath.Join(root, "tmp", "*", "ssh-*")); len(left) > 0 {
		t.Errorf("agent sockets left in the store: %v", left)
	}

	// Another agent, at another path, holding the same key: all cached,
	// as the key names no path.
	agent2 := testutil.SSHAgent(t)
	testutil.SSHAdd(t, agent2, k1)
	k2copy := filepath.Join(t.TempDir(), "copy")
	b, err := os.ReadFile(k2)
	must(t, err)
	must(t, os.WriteFile(k2copy, b, 0o600))
	cmd = exec.Command(kilnBin, "build", "--root", root, "--progress=plain", "--ssh", "default", "--ssh", "other="+k2copy, dir)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agent2)
	o, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, o)
	}
	if got := firstRerun(string(o)); got != "" {
		t.Errorf("rebuild with the agent elsewhere reran %q\n%s", got, o)
	}
}

// TestSSHMountRequired: a required ssh mount without its --ssh fails the
// build naming the line and the flag; optional ones do not.
func TestSSHMountRequired(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	tests := []struct {
		name, mount string
		ok          bool
	}{
		{"required", "type=ssh,id=deploy,required=true", false},
		{"required bare", "type=ssh,id=deploy,required", false},
		{"default id required", "type=ssh,required=true", false},
		{"optional", "type=ssh,id=deploy", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "Dockerfile"), fmt.Sprintf("FROM %s/library/busybox:latest\nRUN echo hi\nRUN --mount=%s echo \"$SSH_AUTH_SOCK\"\n", reg, tt.mount))
			cmd := exec.Command(kilnBin, "build", "--root", t.TempDir(), "--progress=plain", dir)
			cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
			o, err := cmd.CombinedOutput()
			if tt.ok {
				if err != nil {
					t.Fatalf("build: %v\n%s", err, o)
				}
				return
			}
			id := "deploy"
			if !strings.Contains(tt.mount, "id=") {
				id = "default"
			}
			for _, want := range []string{"Dockerfile:3", "--ssh " + id} {
				if err == nil || !strings.Contains(string(o), want) {
					t.Errorf("build: %v, want a failure naming %q\n%s", err, want, o)
				}
			}
		})
	}
}

// TestSSHMountGitClone clones a repository over ssh from a real sshd,
// authenticated by the forwarded agent.
func TestSSHMountGitClone(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base := sshBase(t, reg)
	keys := t.TempDir()
	key := testutil.SSHKey(t, keys, "deploy")
	port := testutil.SSHD(t, key+".pub")

	repo := filepath.Join(t.TempDir(), "repo.git")
	work := t.TempDir()
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, o)
		}
	}
	writeFile(t, filepath.Join(work, "README"), "cloned over ssh\n")
	git(work, "init", "-q", "-b", "main")
	git(work, "add", "README")
	git(work, "commit", "-q", "-m", "first")
	git(work, "clone", "-q", "--bare", work, repo)

	for _, tt := range []struct{ name, flag string }{{"agent", "default"}, {"key file", "default=" + key}} {
		t.Run(tt.name, func(t *testing.T) {
			agent := testutil.SSHAgent(t)
			testutil.SSHAdd(t, agent, key)
			dir, out := t.TempDir(), t.TempDir()
			writeFile(t, filepath.Join(dir, "Dockerfile"), fmt.Sprintf(`FROM %s
ENV GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
RUN --network=host --mount=type=ssh git clone -q ssh://root@127.0.0.1:%d%s /src && rm -rf /src/.git
`, base, port, repo))
			cmd := exec.Command(kilnBin, "build", "--root", t.TempDir(), "--progress=plain", "--allow", "network.host",
				"--ssh", tt.flag, "-o", "type=local,dest="+out, dir)
			cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+agent)
			o, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("build: %v\n%s", err, o)
			}
			b, err := os.ReadFile(filepath.Join(out, "src", "README"))
			if err != nil || string(b) != "cloned over ssh\n" {
				t.Errorf("cloned README: %q, %v", b, err)
			}
		})
	}
}

// TestRootlessSSHMount: a normal user's kiln forwards the user's own agent
// and key file, with the socket owned as asked inside the user namespace.
func TestRootlessSSHMount(t *testing.T) {
	needRootless(t)
	reg := registryWithBases(t)
	base := sshBase(t, reg)
	name, uid, gid := throwawayUser(t)
	dir := userTree(t, "kiln-rl-ssh-", uid, gid)
	bin, home, root, ctxDir, keys, out := filepath.Join(dir("bin"), "kiln"), dir("home"), dir("root"), dir("ctx"), dir("keys"), filepath.Join(dir("out"), "image")
	copyFile(t, kilnBin, bin, 0o755)
	k1, k2 := testutil.SSHKey(t, keys, "agent"), testutil.SSHKey(t, keys, "file")
	for _, p := range []string{k1, k1 + ".pub", k2, k2 + ".pub"} {
		must(t, os.Chown(p, uid, gid))
	}
	asUser := func(cmd *exec.Cmd, env ...string) *exec.Cmd {
		cmd.Dir = home
		cmd.Env = append([]string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "USER=" + name, "KILN_SYNC=wait"}, env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		return cmd
	}
	sock := filepath.Join(keys, "agent.sock")
	agent := asUser(exec.Command("ssh-agent", "-D", "-a", sock))
	must(t, agent.Start())
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		} else if i > 200 {
			t.Fatal("ssh-agent did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o, err := asUser(exec.Command("ssh-add", k1), "SSH_AUTH_SOCK="+sock).CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, o)
	}
	writeFile(t, filepath.Join(ctxDir, "Dockerfile"), "FROM "+base+`
RUN --mount=type=ssh ssh-add -l > /agent.keys
RUN --mount=type=ssh,id=file,uid=1000,gid=1000,mode=0600 stat -c '%u %g %a' $SSH_AUTH_SOCK > /file.stat && ssh-add -l > /file.keys
`)
	must(t, os.Chown(filepath.Join(ctxDir, "Dockerfile"), uid, gid))
	cmd := asUser(exec.Command(bin, "build", "--root", root, "--progress=plain", "--network=none",
		"--ssh", "default", "--ssh", "file="+k2, "-o", "type=local,dest="+out, ctxDir), "SSH_AUTH_SOCK="+sock)
	o, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rootless build: %v\n%s", err, o)
	}
	for file, want := range map[string]string{
		"agent.keys": testutil.SSHFingerprint(t, k1),
		"file.keys":  testutil.SSHFingerprint(t, k2),
		"file.stat":  "1000 1000 600",
	} {
		b, err := os.ReadFile(filepath.Join(out, file))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s: %q %v, want %q", file, b, err, want)
		}
	}
}

// TestSSHMountSymlinkTarget: an ssh mount target reached through a
// symlink the image planted to a host directory (absolute, and climbing
// with ..) lands inside the image's tree; the host directory is untouched
// and the agent still answers there.
func TestSSHMountSymlinkTarget(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base := sshBase(t, reg)
	key := testutil.SSHKey(t, t.TempDir(), "k")
	for _, link := range []string{"abs", "rel"} {
		t.Run(link, func(t *testing.T) {
			canary := testutil.NewCanary(t)
			target := canary.Dir
			if link == "rel" {
				target = canary.Rel()
			}
			dir, out := t.TempDir(), t.TempDir()
			writeFile(t, filepath.Join(dir, "Dockerfile"), fmt.Sprintf(`FROM %s
RUN mkdir -p %s && ln -s %s /t
RUN --mount=type=ssh,target=/t/agent ssh-add -l > /keys
`, base, canary.Dir, target))
			log, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--ssh", "default="+key, "-o", "type=local,dest="+out, dir)
			canary.Check(t)
			if code != 0 {
				t.Fatalf("build: exit %d\n%s", code, log)
			}
			if b, err := os.ReadFile(filepath.Join(out, "keys")); err != nil || !strings.Contains(string(b), testutil.SSHFingerprint(t, key)) {
				t.Errorf("ssh-add -l at the symlinked target: %q %v", b, err)
			}
		})
	}
}
