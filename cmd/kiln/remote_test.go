package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	godigest "github.com/opencontainers/go-digest"

	"github.com/kiln-build/kiln/internal/testutil"
)

// kilnWith runs the binary with extra environment and stdin.
func kilnWith(t *testing.T, env []string, stdin io.Reader, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(kilnBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
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

// tlsFiles is an https server with a test CA, and SSL_CERT_FILE naming
// that CA for kiln to trust it (the system pool, as Go extends it).
type tlsFiles struct {
	srv *httptest.Server
	env []string
	mu  chan struct{}
	// body of /files/app.txt, changeable between builds
	app string
	// full (200) answers for /files/app.txt, and 304 ones
	full, notModified int
}

const remoteLastModified = "Wed, 03 Mar 2021 04:05:06 GMT"

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	f := &tlsFiles{app: "app v1\n", mu: make(chan struct{}, 1)}
	pkg := remoteTar(t, map[string]string{"pkg/file": "in the archive\n"})
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/files/app.txt":
			f.mu <- struct{}{}
			defer func() { <-f.mu }()
			etag := `"` + godigest.FromString(f.app).Encoded()[:12] + `"`
			w.Header().Set("ETag", etag)
			if r.Header.Get("If-None-Match") == etag {
				f.notModified++
				w.WriteHeader(http.StatusNotModified)
				return
			}
			f.full++
			w.Header().Set("Last-Modified", remoteLastModified)
			io.WriteString(w, f.app)
		case "/pkg.tar.gz":
			w.Write(pkg)
		case "/dl":
			w.Header().Set("Content-Disposition", `attachment; filename="named.txt"`)
			io.WriteString(w, "disposition\n")
		case "/ctx.tar.gz":
			w.Write(remoteTar(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY hello /\n", "hello": "from a tarball context\n"}))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	f.env = []string{"SSL_CERT_FILE=" + ca, "SSL_CERT_DIR=/nonexistent"}
	return f
}

func (f *tlsFiles) setApp(s string) { f.mu <- struct{}{}; f.app = s; <-f.mu }

// counts returns and resets the full and 304 answers for /files/app.txt.
func (f *tlsFiles) counts() (full, notModified int) {
	f.mu <- struct{}{}
	defer func() { <-f.mu }()
	full, notModified = f.full, f.notModified
	f.full, f.notModified = 0, 0
	return full, notModified
}

func remoteTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func writeDockerfile(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func statOf(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAddURL(t *testing.T) {
	needRoot(t)
	f := newTLSFiles(t)
	u := f.srv.URL
	sum := godigest.FromString("app v1\n")
	df := fmt.Sprintf(`FROM scratch
ADD --checksum=%[2]s %[1]s/files/app.txt /b/pinned
ADD %[1]s/pkg.tar.gz /d/
ADD --unpack=true %[1]s/pkg.tar.gz /e/
ADD %[1]s/dl /f/
ADD %[1]s/files/app.txt /a/
ADD --chown=7:8 --chmod=640 %[1]s/files/app.txt /c/
`, u, sum)
	ctxDir := writeDockerfile(t, df)
	root := t.TempDir()
	out := filepath.Join(t.TempDir(), "rootfs")
	build := func(extra ...string) string {
		t.Helper()
		os.RemoveAll(out)
		args := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=local,dest=" + out}, extra...)
		log, code := kilnWith(t, f.env, nil, append(args, ctxDir)...)
		if code != 0 {
			t.Fatalf("build failed (%d):\n%s", code, log)
		}
		return log
	}
	log := build()

	st := statOf(t, filepath.Join(out, "a/app.txt"))
	if st.Mode&0o7777 != 0o600 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("/a/app.txt: mode %o owner %d:%d, want 600 0:0 (BuildKit's)", st.Mode&0o7777, st.Uid, st.Gid)
	}
	lm, _ := http.ParseTime(remoteLastModified)
	if mt := time.Unix(st.Mtim.Unix()); !mt.Equal(lm) {
		t.Errorf("/a/app.txt mtime %v, want Last-Modified %v", mt, lm)
	}
	if got := readFile(t, filepath.Join(out, "b/pinned")); got != "app v1\n" {
		t.Errorf("/b/pinned = %q", got)
	}
	st = statOf(t, filepath.Join(out, "c/app.txt"))
	if st.Mode&0o7777 != 0o640 || st.Uid != 7 || st.Gid != 8 {
		t.Errorf("/c/app.txt: mode %o owner %d:%d, want 640 7:8", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if fi, err := os.Lstat(filepath.Join(out, "d/pkg.tar.gz")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("/d/pkg.tar.gz: %v (a remote archive is not unpacked without --unpack)", err)
	}
	if got := readFile(t, filepath.Join(out, "e/pkg/file")); got != "in the archive\n" {
		t.Errorf("/e/pkg/file = %q (--unpack)", got)
	}
	// ADD names the file from the URL's path, as BuildKit's Dockerfile
	// frontend does, not from Content-Disposition.
	if got := readFile(t, filepath.Join(out, "f/dl")); got != "disposition\n" {
		t.Errorf("/f/dl = %q", got)
	}
	if strings.Count(log, "CACHED") != 0 {
		t.Errorf("first build had cached steps:\n%s", log)
	}

	f.counts()
	// Same content: every step is a hit, and the unpinned downloads are
	// revalidated by their ETag rather than downloaded again.
	log = build()
	if n := strings.Count(log, "CACHED"); n != 6 {
		t.Errorf("rebuild: %d cached steps, want 6:\n%s", n, log)
	}
	if full, nm := f.counts(); full != 0 || nm != 2 {
		t.Errorf("rebuild: %d downloads and %d revalidations of app.txt, want 0 and 2", full, nm)
	}
	// Revalidated but run (--no-cache): the step downloads the bytes then.
	build("--no-cache")
	if got := readFile(t, filepath.Join(out, "a/app.txt")); got != "app v1\n" {
		t.Errorf("/a/app.txt = %q after a revalidated run", got)
	}
	if full, nm := f.counts(); full != 3 || nm != 2 {
		t.Errorf("--no-cache: %d downloads and %d revalidations of app.txt, want 3 (pinned and the two revalidated, when they run) and 2", full, nm)
	}
	// New content behind the same URL: the unpinned steps run again; the
	// pinned one is keyed by its checksum and stays a hit without a
	// download (it would fail its checksum if it ran).
	f.setApp("app v2\n")
	log = build()
	if n := strings.Count(log, "CACHED"); n != 4 {
		t.Errorf("after the content changed: %d cached steps, want 4 (pinned, two pkg, dl; then the two unpinned run):\n%s", n, log)
	}
	if got := readFile(t, filepath.Join(out, "a/app.txt")); got != "app v2\n" {
		t.Errorf("/a/app.txt = %q after the change", got)
	}
}

func TestAddURLChecksumMismatch(t *testing.T) {
	needRoot(t)
	f := newTLSFiles(t)
	wrong := godigest.FromString("something else")
	ctxDir := writeDockerfile(t, fmt.Sprintf("FROM scratch\nADD --checksum=%s %s/files/app.txt /x\n", wrong, f.srv.URL))
	out := filepath.Join(t.TempDir(), "rootfs")
	log, code := kilnWith(t, f.env, nil, "build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest="+out, ctxDir)
	if code == 0 || !strings.Contains(log, "digest mismatch") || !strings.Contains(log, wrong.String()) {
		t.Fatalf("exit %d, want a digest mismatch naming %s:\n%s", code, wrong, log)
	}
	if _, err := os.Stat(filepath.Join(out, "x")); err == nil {
		t.Errorf("the file landed despite the mismatch")
	}
	for _, bad := range []struct{ df, want string }{
		{"FROM scratch\nADD --checksum=" + wrong.String() + " a b /x/\n", "multiple sources"},
		{"FROM scratch\nADD --checksum=" + wrong.String() + " a /x\n", "requires HTTP(S) or Git sources"},
	} {
		dir := writeDockerfile(t, bad.df)
		log, code := kilnWith(t, f.env, nil, "build", "--root", t.TempDir(), "--progress=plain", dir)
		if code == 0 || !strings.Contains(log, bad.want) || !strings.Contains(log, "Dockerfile:2") {
			t.Errorf("%q: exit %d, want %q on Dockerfile:2:\n%s", bad.df, code, bad.want, log)
		}
	}
}

func TestAddURLUntrusted(t *testing.T) {
	needRoot(t)
	f := newTLSFiles(t)
	ctxDir := writeDockerfile(t, fmt.Sprintf("FROM scratch\nADD %s/files/app.txt /x\n", f.srv.URL))
	log, code := kilnWith(t, []string{"SSL_CERT_FILE=/nonexistent", "SSL_CERT_DIR=/nonexistent"}, nil, "build", "--root", t.TempDir(), "--progress=plain", ctxDir)
	if code == 0 || !strings.Contains(log, "certificate") {
		t.Fatalf("exit %d, want a certificate error:\n%s", code, log)
	}
}

// TestAddURLProxy: HTTP_PROXY is honoured. The host does not resolve, so
// only the proxy can answer.
func TestAddURLProxy(t *testing.T) {
	needRoot(t)
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.String())
		if r.URL.Host != "kiln-proxy-test.invalid" {
			http.Error(w, "not proxied", http.StatusBadGateway)
			return
		}
		io.WriteString(w, "via the proxy\n")
	}))
	defer proxy.Close()
	ctxDir := writeDockerfile(t, "FROM scratch\nADD http://kiln-proxy-test.invalid/p.txt /\n")
	out := filepath.Join(t.TempDir(), "rootfs")
	log, code := kilnWith(t, []string{"HTTP_PROXY=" + proxy.URL, "http_proxy=" + proxy.URL, "NO_PROXY=", "no_proxy="}, nil,
		"build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest="+out, ctxDir)
	if code != 0 {
		t.Fatalf("build failed:\n%s", log)
	}
	if got := readFile(t, filepath.Join(out, "p.txt")); got != "via the proxy\n" {
		t.Errorf("/p.txt = %q", got)
	}
	if len(seen) == 0 {
		t.Errorf("the proxy saw no request")
	}
}

func TestAddGit(t *testing.T) {
	needRoot(t)
	repo := testutil.NewGitRepo(t)
	gitURL := testutil.GitDaemon(t, repo.Base) + "/repo.git"
	httpURL := testutil.GitHTTP(t, repo.Base) + "/repo.git"
	df := fmt.Sprintf(`FROM scratch
ADD %[1]s#v1:sub /src/
ADD --keep-git-dir=true %[1]s#v1 /k/
ADD --chown=5:6 %[2]s#main:sub /h/
ADD --checksum=%[3]s %[1]s#v1 /c/
`, gitURL, httpURL, repo.V1[:10])
	ctxDir := writeDockerfile(t, df)
	out := filepath.Join(t.TempDir(), "rootfs")
	root := t.TempDir()
	log, code := kilnWith(t, nil, nil, "build", "--root", root, "--progress=plain", "-o", "type=local,dest="+out, ctxDir)
	if code != 0 {
		t.Fatalf("build failed:\n%s", log)
	}
	if got := readFile(t, filepath.Join(out, "src/a.txt")); got != "a1\n" {
		t.Errorf("/src/a.txt = %q, want the v1 content", got)
	}
	if l, err := os.Readlink(filepath.Join(out, "src/link")); err != nil || l != "a.txt" {
		t.Errorf("/src/link = %q, %v", l, err)
	}
	for _, p := range []string{"src/.git", "src/README", "c/.git", "src/b.txt"} {
		if _, err := os.Lstat(filepath.Join(out, p)); err == nil {
			t.Errorf("/%s exists", p)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "k/.git")); err != nil || !fi.IsDir() {
		t.Errorf("/k/.git: %v (--keep-git-dir)", err)
	}
	st := statOf(t, filepath.Join(out, "h/b.txt"))
	if st.Uid != 5 || st.Gid != 6 {
		t.Errorf("/h/b.txt owner %d:%d, want 5:6", st.Uid, st.Gid)
	}
	if got := readFile(t, filepath.Join(out, "c/README")); got != "one\n" {
		t.Errorf("/c/README = %q", got)
	}
	// A ref that resolves to the same commit is a hit.
	log, code = kilnWith(t, nil, nil, "build", "--root", root, "--progress=plain", ctxDir)
	if code != 0 || strings.Count(log, "CACHED") != 4 {
		t.Errorf("rebuild: exit %d, want 4 cached steps:\n%s", code, log)
	}

	bad := writeDockerfile(t, fmt.Sprintf("FROM scratch\nADD --checksum=%s %s#v1 /c/\n", repo.Main, gitURL))
	log, code = kilnWith(t, nil, nil, "build", "--root", t.TempDir(), "--progress=plain", bad)
	if code == 0 || !strings.Contains(log, "expected checksum to match") {
		t.Errorf("checksum mismatch: exit %d:\n%s", code, log)
	}
}

func TestRemoteContexts(t *testing.T) {
	needRoot(t)
	f := newTLSFiles(t)
	repo := testutil.NewGitRepo(t)
	gitHTTP := testutil.GitHTTP(t, repo.Base) + "/repo.git"
	stdinTar := remoteTar(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY x /x\n", "x": "from stdin\n"})
	tests := []struct {
		name  string
		args  []string
		stdin []byte
		file  string // a file of the result
		want  string
	}{
		{name: "stdin tar", args: []string{"-"}, stdin: stdinTar, file: "x", want: "from stdin\n"},
		{name: "stdin dockerfile", args: []string{"-"}, stdin: []byte("FROM scratch\nADD " + f.srv.URL + "/dl /y\n"), file: "y", want: "disposition\n"},
		{name: "git context", args: []string{gitHTTP + "#v1:sub"}, file: "ctx/a.txt", want: "a1\n"},
		{name: "git context -f", args: []string{"-f", "sub/Dockerfile", gitHTTP + "#main"}, file: "ctx/README", want: "one\n"},
		{name: "tarball context", args: []string{f.srv.URL + "/ctx.tar.gz"}, file: "hello", want: "from a tarball context\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rootfs")
			args := append([]string{"build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest=" + out}, tt.args...)
			log, code := kilnWith(t, f.env, bytes.NewReader(tt.stdin), args...)
			if code != 0 {
				t.Fatalf("build failed:\n%s", log)
			}
			if got := readFile(t, filepath.Join(out, tt.file)); got != tt.want {
				t.Errorf("/%s = %q, want %q", tt.file, got, tt.want)
			}
		})
	}
	log, code := kilnWith(t, nil, strings.NewReader("FROM scratch\n"), "build", "-f", "-", "-")
	if code == 0 || !strings.Contains(log, "both come from stdin") {
		t.Errorf("-f - with context -: exit %d:\n%s", code, log)
	}
}

// TestBuildContextRemote: --build-context NAME=URL with a git URL (the
// checkout of the ref, its subdir as the root) and an https URL (a
// directory holding the download as "context", not unpacked), as
// BuildKit gives them to COPY --from and FROM.
func TestBuildContextRemote(t *testing.T) {
	needRoot(t)
	f := newTLSFiles(t)
	repo := testutil.NewGitRepo(t)
	gitHTTP := testutil.GitHTTP(t, repo.Base) + "/repo.git"
	ctxDir := t.TempDir()
	writeTree(t, ctxDir, map[string]string{"Dockerfile": "FROM scratch\nCOPY --from=src a.txt /from-git\nCOPY --from=dl context /from-https\n"})
	out := filepath.Join(t.TempDir(), "rootfs")
	log, code := kilnWith(t, f.env, nil, "build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest="+out,
		"--build-context", "src="+gitHTTP+"#v1:sub", "--build-context", "dl="+f.srv.URL+"/ctx.tar.gz", ctxDir)
	if code != 0 {
		t.Fatalf("build failed:\n%s", log)
	}
	if got := readFile(t, filepath.Join(out, "from-git")); got != "a1\n" {
		t.Errorf("/from-git = %q, want the tag's a.txt", got)
	}
	want, err := os.ReadFile(filepath.Join(out, "from-https"))
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 2 || want[0] != 0x1f || want[1] != 0x8b {
		t.Errorf("/from-https is not the gzip download itself (%d bytes)", len(want))
	}
}
