package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// A bind mount of the build context shows what .dockerignore keeps, and
// nothing else: the step fails if it sees an ignored file.
const contextMountDockerfile = `FROM {{BASE}}
RUN --mount=type=bind,target=/ctx test -e /ctx/keep.txt && test -e /ctx/src/a.txt && test ! -e /ctx/.env && test ! -e /ctx/.git && test ! -e /ctx/src/debug.log && cat /ctx/keep.txt > /seen
RUN --mount=type=bind,source=src,target=/src,rw touch /src/new && test ! -e /src/debug.log
RUN --mount=type=bind,target=/again cmp /again/keep.txt /seen && test ! -e /again/.env && test ! -e /again/src/new
`

// TestBindMountContextIgnored checks that a RUN bind mount of the context
// hides what .dockerignore excludes, that editing an excluded file keeps
// the step cached, and that editing a visible one reruns it.
func TestBindMountContextIgnored(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	tests := []struct {
		name   string
		change func(dir string)
		want   string
	}{
		{"nothing", func(string) {}, ""},
		{"ignored file edited", func(dir string) { writeFile(t, filepath.Join(dir, ".env"), "SECRET=2\n") }, ""},
		{"ignored file in a source edited", func(dir string) { writeFile(t, filepath.Join(dir, "src/debug.log"), "more\n") }, ""},
		{"visible file edited", func(dir string) { writeFile(t, filepath.Join(dir, "keep.txt"), "changed\n") }, "RUN --mount=type=bind,target=/ctx"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := fmt.Sprintf("%s/test/ctxmount%d:latest", reg, i)
			testutil.Push(t, testutil.BusyboxImage(t), base)
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "Dockerfile"), strings.ReplaceAll(contextMountDockerfile, "{{BASE}}", base))
			writeFile(t, filepath.Join(dir, ".dockerignore"), ".env\n.git\n**/*.log\n")
			writeFile(t, filepath.Join(dir, ".env"), "SECRET=1\n")
			writeFile(t, filepath.Join(dir, ".git/HEAD"), "ref: refs/heads/main\n")
			writeFile(t, filepath.Join(dir, "keep.txt"), "kept\n")
			writeFile(t, filepath.Join(dir, "src/a.txt"), "a\n")
			writeFile(t, filepath.Join(dir, "src/debug.log"), "noise\n")
			root := t.TempDir()
			if log, code := kiln(t, "build", "--root", root, "--progress=plain", dir); code != 0 {
				t.Fatalf("first build: exit %d\n%s", code, log)
			}
			tt.change(dir)
			log, code := kiln(t, "build", "--root", root, "--progress=plain", dir)
			if code != 0 {
				t.Fatalf("rebuild: exit %d\n%s", code, log)
			}
			got := firstRerun(log)
			if !strings.HasPrefix(got, tt.want) || (tt.want == "") != (got == "") {
				t.Errorf("first step to rerun: %q, want %q\n%s", got, tt.want, log)
			}
		})
	}
}

// TestRootlessContextMount: the context snapshot a bind mount shows is
// made and removed in a rootless build too.
func TestRootlessContextMount(t *testing.T) {
	needRootless(t)
	name, uid, gid := throwawayUser(t)
	dir := userTree(t, "kiln-rootless-ctx-", uid, gid)
	bin, home, root, ctxDir := filepath.Join(dir("bin"), "kiln"), dir("home"), dir("root"), dir("ctx")
	copyFile(t, kilnBin, bin, 0o755)
	reg := registryWithBases(t)
	files := map[string]string{
		"Dockerfile":    "FROM " + reg + "/library/busybox:latest\nRUN --mount=type=bind,target=/ctx test ! -e /ctx/.env && cat /ctx/hello.txt > /h\n",
		".dockerignore": ".env\n",
		".env":          "SECRET=1\n",
		"hello.txt":     "hello\n",
	}
	for f, content := range files {
		writeFile(t, filepath.Join(ctxDir, f), content)
		must(t, os.Chown(filepath.Join(ctxDir, f), uid, gid))
	}
	cmd := exec.Command(bin, "build", "--root", root, "--progress=plain", "--network=none", ctxDir)
	cmd.Dir = home
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "USER=" + name, "KILN_SYNC=wait"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rootless build: %v\n%s", err, out)
	}
	left, _ := filepath.Glob(filepath.Join(root, "tmp", "context-mount-*"))
	if len(left) != 0 {
		t.Errorf("snapshots left in the store: %v", left)
	}
}
