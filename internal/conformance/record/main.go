// Command record writes the expected results of kiln's conformance cases
// from BuildKit itself. It needs the peers of ../shared/conformance/peers.sh
// (buildkitd on /tmp/peers/buildkitd.sock, a registry on 127.0.0.1:5000):
//
//	go run ./internal/conformance/record [-dir testdata/conformance] [CASE...]
//
// For each case it builds the Dockerfile with buildctl exactly as
// conform.sh does, then stores expected/config.txt and expected/fs.txt (the
// changes relative to the case's base image, see package conformance); a
// case with a platforms file is built once per platform, into
// expected/linux_arm64/ … (needs `peers.sh multiarch`).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-build/kiln/internal/conformance"
)

func main() {
	dir := flag.String("dir", "testdata/conformance", "folder of cases")
	flag.Parse()
	cases := flag.Args()
	if len(cases) == 0 {
		ents, err := os.ReadDir(*dir)
		die(err)
		for _, e := range ents {
			if e.IsDir() {
				cases = append(cases, e.Name())
			}
		}
	}
	failed := 0
	for _, c := range cases {
		if err := record(filepath.Join(*dir, c)); err != nil {
			fmt.Printf("FAIL %s: %v\n", c, err)
			failed++
			continue
		}
		fmt.Printf("ok   %s\n", c)
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func record(caseDir string) error {
	meta, err := conformance.ReadCase(caseDir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "record-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	ctxDir := filepath.Join(work, "ctx")
	if err := conformance.PrepareContext(caseDir, ctxDir); err != nil {
		return err
	}
	// BuildKit would fetch the frontend image a "# syntax=" line names;
	// conform.sh drops the line for BuildKit too (kiln is that frontend).
	df := filepath.Join(ctxDir, "Dockerfile")
	if src, err := os.ReadFile(df); err == nil {
		var keep []string
		for _, l := range strings.Split(string(src), "\n") {
			if !strings.HasPrefix(l, "# syntax=") {
				keep = append(keep, l)
			}
		}
		if err := os.WriteFile(df, []byte(strings.Join(keep, "\n")), 0o644); err != nil {
			return err
		}
	}
	plats := meta.Platforms
	if len(plats) == 0 {
		plats = []string{""}
	}
	for _, p := range plats {
		if err := recordPlatform(caseDir, ctxDir, work, meta, p); err != nil {
			if p != "" {
				err = fmt.Errorf("%s: %w", p, err)
			}
			return err
		}
	}
	return nil
}

// recordPlatform builds the case for platform p ("" = buildkitd's default)
// and writes its expectations into conformance.ExpectedDir.
func recordPlatform(caseDir, ctxDir, work string, meta conformance.Case, p string) error {
	out := filepath.Join(work, "image.tar")
	args := []string{"--addr", "unix:///tmp/peers/buildkitd.sock", "build", "--progress=plain",
		"--frontend", "dockerfile.v0", "--local", "context=" + ctxDir, "--local", "dockerfile=" + ctxDir,
		"--output", "type=docker,name=conform/case:latest,dest=" + out}
	if p != "" {
		args = append(args, "--opt", "platform="+p)
	}
	for _, a := range meta.BuildArgs {
		args = append(args, "--opt", "build-arg:"+a)
	}
	if meta.Target != "" {
		args = append(args, "--opt", "target="+meta.Target)
	}
	for _, s := range meta.Secrets {
		args = append(args, "--secret", s)
	}
	cmd := exec.Command("/tmp/peers/bin/buildctl", args...)
	logb, err := cmd.CombinedOutput()
	exp := conformance.ExpectedDir(caseDir, p)
	if meta.ExpectError != "" {
		if err == nil {
			return fmt.Errorf("BuildKit built a case that expects an error")
		}
		return os.WriteFile(filepath.Join(caseDir, "expected", "buildkit-error.txt"), tailLines(logb, 15), 0o644)
	}
	if err != nil {
		return fmt.Errorf("buildctl: %v\n%s", err, tailLines(logb, 15))
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		return err
	}
	base, err := baseImage(meta.Base, p)
	if err != nil {
		return err
	}
	cfg, err := conformance.Config(img)
	if err != nil {
		return err
	}
	delta, err := conformance.DeltaOf(base, img)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(exp, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(exp, "config.txt"), []byte(cfg), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(exp, "fs.txt"), []byte(strings.Join(delta, "\n")+"\n"), 0o644)
}

// baseImage is ref's image for platform p ("" = linux/amd64).
func baseImage(ref, p string) (v1.Image, error) {
	if ref == "scratch" {
		return empty.Image, nil
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return remote.Image(r)
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil {
		return nil, err
	}
	return remote.Image(r, remote.WithPlatform(*plat))
}

func tailLines(b []byte, n int) []byte {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

func die(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		os.Exit(2)
	}
}
