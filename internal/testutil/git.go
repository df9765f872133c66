package testutil

import (
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Git runs git in dir with a fixed identity and no user or system config,
// and returns its trimmed output; a failure fails the test.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=kiln test", "GIT_AUTHOR_EMAIL=test@kiln.invalid",
		"GIT_COMMITTER_NAME=kiln test", "GIT_COMMITTER_EMAIL=test@kiln.invalid",
		"GIT_AUTHOR_DATE=2020-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2020-01-02T03:04:05Z")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// NeedGit skips (SkipHost) when the git CLI is missing.
func NeedGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		SkipHost(t, "needs git (Debian package git)")
	}
}

// GitRepo is a test repository, bare, at Base/repo.git.
type GitRepo struct {
	Base string
	// V1 is the commit the annotated tag v1 points at; Main the commit of
	// branch main (HEAD), one later.
	V1, Main string
}

// NewGitRepo makes the test repository: at v1 README ("one\n"),
// sub/a.txt ("a1\n"), sub/link -> a.txt and sub/Dockerfile (COPY . /ctx/,
// for a context at sub); main changes sub/a.txt to
// "a2\n" and adds sub/b.txt.
func NewGitRepo(t testing.TB) *GitRepo {
	t.Helper()
	NeedGit(t)
	work := filepath.Join(t.TempDir(), "work")
	write := func(name, data string) {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("README", "one\n")
	write("sub/a.txt", "a1\n")
	write("sub/Dockerfile", "FROM scratch\nCOPY . /ctx/\n")
	if err := os.Symlink("a.txt", filepath.Join(work, "sub", "link")); err != nil {
		t.Fatal(err)
	}
	Git(t, work, "init", "-q", "-b", "main")
	Git(t, work, "add", ".")
	Git(t, work, "commit", "-q", "-m", "one")
	Git(t, work, "tag", "-a", "-m", "v1", "v1")
	r := &GitRepo{Base: t.TempDir(), V1: Git(t, work, "rev-parse", "HEAD")}
	write("sub/a.txt", "a2\n")
	write("sub/b.txt", "b\n")
	Git(t, work, "add", ".")
	Git(t, work, "commit", "-q", "-m", "two")
	r.Main = Git(t, work, "rev-parse", "HEAD")
	Git(t, r.Base, "clone", "-q", "--bare", work, "repo.git")
	return r
}

// GitDaemon serves base over git:// on 127.0.0.1 until the test ends and
// returns the URL prefix ("git://127.0.0.1:PORT").
func GitDaemon(t testing.TB, base string) string {
	t.Helper()
	NeedGit(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("git", "daemon", "--reuseaddr", "--export-all", "--base-path="+base,
		"--listen=127.0.0.1", "--port="+itoa(port), base)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	if err := cmd.Start(); err != nil {
		SkipHost(t, "needs git daemon (Debian package git): ", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + itoa(port)
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "git://" + addr
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("git daemon did not listen on %s", addr)
	return ""
}

// GitHTTP serves base with git's smart HTTP protocol (git http-backend
// through CGI) on 127.0.0.1 until the test ends and returns the URL
// prefix ("http://127.0.0.1:PORT").
func GitHTTP(t testing.TB, base string) string {
	t.Helper()
	NeedGit(t)
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		SkipHost(t, "needs git (Debian package git): ", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		SkipHost(t, "needs git http-backend (Debian package git): ", err)
	}
	h := &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// AddSuperproject adds Base/super.git: a README and the submodule "mod"
// (repo.git at main, by the relative URL ../repo.git, so it is fetched
// from wherever super.git is served).
func (r *GitRepo) AddSuperproject(t testing.TB) {
	t.Helper()
	work := filepath.Join(t.TempDir(), "super")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "README"), []byte("super\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	Git(t, work, "init", "-q", "-b", "main")
	Git(t, work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", filepath.Join(r.Base, "repo.git"), "mod")
	Git(t, work, "config", "-f", ".gitmodules", "submodule.mod.url", "../repo.git")
	Git(t, work, "add", ".")
	Git(t, work, "commit", "-q", "-m", "super")
	Git(t, r.Base, "clone", "-q", "--bare", work, "super.git")
}
