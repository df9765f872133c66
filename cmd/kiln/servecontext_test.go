package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/serve"
)

// TestServeContextHash: the context hash kiln serve's builds take from
// the unpacking (digests computed as the tar streams by, files made from
// the inodes of the contexts before) is the one kiln build computes over
// the same directory: docker build through kiln serve, then kiln build of
// the directory on the same store, hits every step and makes the same
// image, with a .dockerignore, files no COPY reads, a symlink, a
// hardlink and an executable; and so does a second docker build, whose
// files come from the first one's. After each response the scratch
// directory and its context hash state go away, and kiln serve stopped
// right after a response removes its scratch directory (and its pool of
// files) before it exits.
func TestServeContextHash(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	dir := t.TempDir()
	s, root, sock := serveBusybox(t, dir)
	host := "unix://" + sock

	ctxDir := filepath.Join(dir, "ctx")
	writeFiles(t, ctxDir, map[string]string{
		"Dockerfile.all":  "FROM test/busybox:1\nCOPY . /all/\nRUN ls -lR /all > /listing\n",
		"Dockerfile.some": "FROM test/busybox:1\nCOPY sub/ /sub/\nCOPY a.txt link /\nRUN cat /a.txt /sub/deep/c > /x\n",
		".dockerignore":   "ignored*\n!ignored-kept\n",
		"a.txt":           "a\n",
		"sub/b":           strings.Repeat("b", 300<<10),
		"sub/deep/c":      "c\n",
		"sub/empty":       "",
		"ignored-1":       "never sent\n",
		"ignored-kept":    "sent\n",
		"never-copied":    "only in the context\n",
	})
	if err := os.Chmod(filepath.Join(ctxDir, "sub/deep/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", filepath.Join(ctxDir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(ctxDir, "sub/b"), filepath.Join(ctxDir, "sub/hard")); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, "tmp")
	built := regexp.MustCompile(`Successfully built ([0-9a-f]{12})\n`)
	cachedStep := regexp.MustCompile(`(?m)^#[0-9]+ CACHED$`)
	for _, df := range []string{"Dockerfile.all", "Dockerfile.some"} {
		t.Run(df, func(t *testing.T) {
			var ids []string
			for i := 0; i < 2; i++ {
				cmd := exec.Command("docker", "-H", host, "build", "--network", "none", "-f", df, ".")
				cmd.Dir = ctxDir
				cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("docker build: %v:\n%s\nserver:\n%s", err, out, s.log)
				}
				m := built.FindStringSubmatch(string(out))
				if m == nil {
					t.Fatalf("docker build printed no image ID:\n%s", out)
				}
				ids = append(ids, m[1])
				if ents, err := scratchGone(tmp); err != nil || len(ents) != 0 {
					t.Errorf("the store's tmp after the build: %v, %v; want no scratch directory left", ents, err)
				}
				if memos, _ := filepath.Glob(filepath.Join(root, "contexthash", "*.memo")); len(memos) != 0 {
					t.Errorf("the context hash state of the build's context stayed: %v", memos)
				}
			}
			if ids[0] != ids[1] {
				t.Errorf("docker build again (its files from the first one's): image %s, want %s", ids[1], ids[0])
			}
			iid := filepath.Join(t.TempDir(), "iid")
			out, code := kiln(t, "--root", root, "build", "--progress=plain", "--network", "none", "-f", filepath.Join(ctxDir, df), "--iidfile", iid, ctxDir)
			if code != 0 {
				t.Fatalf("kiln build: %s", out)
			}
			id, err := os.ReadFile(iid)
			if err != nil {
				t.Fatal(err)
			}
			if short := strings.TrimPrefix(string(id), "sha256:")[:12]; short != ids[0] {
				t.Errorf("kiln build of the directory made %s, docker build through kiln serve %s:\n%s", id, ids[0], out)
			}
			want := strings.Count(out, "] COPY ") + strings.Count(out, "] RUN ")
			if cached := len(cachedStep.FindAllString(out, -1)); want == 0 || cached != want {
				t.Errorf("kiln build after docker build through kiln serve: %d steps cached, want all %d (the same step keys):\n%s", cached, want, out)
			}
			// kiln build's own state of ctxDir: the next subtest starts
			// with none
			os.RemoveAll(filepath.Join(root, "contexthash"))
		})
	}

	// SIGTERM right after a response: kiln serve removes the scratch
	// directory before it exits.
	cmd := exec.Command("docker", "-H", host, "build", "-q", "--network", "none", "-f", "Dockerfile.some", ".")
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v:\n%s\nserver:\n%s", err, out, s.log)
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("kiln serve exited %d on SIGTERM:\n%s", code, s.log)
	}
	for _, pattern := range []string{"serve-build-*", serve.FilePoolPrefix + "*"} {
		if left, _ := filepath.Glob(filepath.Join(tmp, pattern)); len(left) != 0 {
			t.Errorf("kiln serve exited leaving %v", left)
		}
	}
}
