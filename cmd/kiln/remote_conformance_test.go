package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/internal/conformance"
	"github.com/kiln-build/kiln/internal/testutil"
)

// TestRemoteConformance builds the cases of testdata/remote-cases, which
// need servers conform.sh cannot start (an HTTP file server, a git
// daemon), and compares config and filesystem with expected/. With
// KILN_RECORD_BUILDKIT=1 it builds them with the peers' BuildKit instead
// and records expected/ from that.
func TestRemoteConformance(t *testing.T) {
	record := os.Getenv("KILN_RECORD_BUILDKIT") == "1"
	if !record {
		needRoot(t)
	}
	pkg := remoteTar(t, map[string]string{"pkg/file": "in the archive\n"})
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/files/app.txt":
			w.Header().Set("Last-Modified", remoteLastModified)
			io.WriteString(w, "app v1\n")
		case "/pkg.tar.gz":
			w.Write(pkg)
		case "/":
			io.WriteString(w, "<html>index</html>\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer files.Close()
	repo := testutil.NewGitRepo(t)
	gitURL := testutil.GitDaemon(t, repo.Base)
	subst := strings.NewReplacer("{{HTTP}}", files.URL, "{{GIT}}", gitURL, "{{V1}}", repo.V1)

	dir := filepath.Join("testdata", "remote-cases")
	root := t.TempDir()
	for _, name := range caseNames(t, dir) {
		t.Run(name, func(t *testing.T) {
			caseDir := filepath.Join(dir, name)
			src, err := os.ReadFile(filepath.Join(caseDir, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			ctxDir := t.TempDir()
			if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(subst.Replace(string(src))), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "image.tar")
			if record {
				cmd := exec.Command("/tmp/peers/bin/buildctl", "--addr", "unix:///tmp/peers/buildkitd.sock", "build", "--progress=plain",
					"--frontend", "dockerfile.v0", "--local", "context="+ctxDir, "--local", "dockerfile="+ctxDir,
					"--output", "type=docker,name=conform/case:latest,dest="+out)
				if log, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("buildctl: %v\n%s", err, log)
				}
			} else {
				log, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", "conform/"+name+":latest", "-o", "type=docker,dest="+out, ctxDir)
				if code != 0 {
					t.Fatalf("kiln build exited %d:\n%s", code, log)
				}
			}
			img, err := tarball.ImageFromPath(out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(img); err != nil {
				t.Errorf("image does not validate: %v", err)
			}
			cfg, err := conformance.Config(img)
			if err != nil {
				t.Fatal(err)
			}
			delta, err := conformance.DeltaOf(empty.Image, img)
			if err != nil {
				t.Fatal(err)
			}
			if record {
				for f, data := range map[string]string{"config.txt": cfg, "fs.txt": strings.Join(delta, "\n") + "\n"} {
					if err := os.WriteFile(filepath.Join(caseDir, "expected", f), []byte(data), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return
			}
			compare(t, filepath.Join(caseDir, "expected", "config.txt"), cfg)
			compare(t, filepath.Join(caseDir, "expected", "fs.txt"), strings.Join(delta, "\n")+"\n")
		})
	}
}
