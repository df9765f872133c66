package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/internal/conformance"
	"github.com/kiln-build/kiln/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite expectations from kiln's own output (prefer recording them from BuildKit: go run ./internal/conformance/record)")

// kilnBin is the kiln binary under test, built once by TestMain.
var kilnBin string

func TestMain(m *testing.M) {
	flag.Parse()
	testutil.RunWithKiln(m, ".", &kilnBin)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "needs root: builds run RUN steps in namespaces on overlayfs")
	}
}

// registryWithBases starts a registry holding the test base images and
// returns its host:port.
func registryWithBases(t *testing.T) string {
	t.Helper()
	reg := testutil.Registry(t)
	testutil.PushBusybox(t, reg)
	return reg
}

// kiln runs the binary; it returns stdout+stderr and the exit code.
func kiln(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(kilnBin, args...)
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

// rewriteHost points a case at the test registry instead of the peers'
// registry on 127.0.0.1:5000 that its expectations were recorded with.
func rewriteHost(s, reg string) string { return strings.ReplaceAll(s, "127.0.0.1:5000", reg) }

func prepareCase(t *testing.T, caseDir, reg string) (string, conformance.Case) {
	t.Helper()
	meta, err := conformance.ReadCase(caseDir)
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Join(t.TempDir(), "ctx")
	if err := conformance.PrepareContext(caseDir, ctxDir); err != nil {
		t.Fatal(err)
	}
	df := filepath.Join(ctxDir, "Dockerfile")
	src, err := os.ReadFile(df)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(df, []byte(rewriteHost(string(src), reg)), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, a := range meta.BuildArgs {
		meta.BuildArgs[i] = rewriteHost(a, reg)
	}
	meta.Base = rewriteHost(meta.Base, reg)
	return ctxDir, meta
}

func buildArgs(root, ctxDir string, meta conformance.Case, extra ...string) []string {
	args := []string{"build", "--root", root, "--progress=plain"}
	for _, a := range meta.BuildArgs {
		args = append(args, "--build-arg", a)
	}
	if meta.Target != "" {
		args = append(args, "--target", meta.Target)
	}
	for _, s := range meta.Secrets {
		args = append(args, "--secret", s)
	}
	return append(append(args, extra...), ctxDir)
}

func caseNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestConformance builds every case of testdata/conformance and compares
// the config and the filesystem changes with what BuildKit produced.
func TestConformance(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	dir := filepath.Join("..", "..", "testdata", "conformance")
	for _, name := range caseNames(t, dir) {
		t.Run(name, func(t *testing.T) {
			caseDir := filepath.Join(dir, name)
			ctxDir, meta := prepareCase(t, caseDir, reg)
			switch {
			case strings.HasSuffix(meta.Base, "bookworm-arm64"):
				// an emulated Debian: built once per machine (minutes)
				needEmulation(t, "linux/arm64")
				testutil.PushDebianFor(t, reg, "linux/arm64")
			case strings.Contains(meta.Base, "debian"):
				testutil.PushDebian(t, reg)
			}
			if len(meta.Platforms) == 0 {
				conformCase(t, root, ctxDir, caseDir, name, meta, "")
				return
			}
			// A case for several platforms is built once per platform,
			// as conform.sh does, on the multi-platform busybox.
			testutil.PushBusyboxMulti(t, reg)
			for _, p := range meta.Platforms {
				t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
					if p != "linux/amd64" {
						needEmulation(t, p)
					}
					conformCase(t, root, ctxDir, caseDir, name, meta, p)
				})
			}
		})
	}
}

// conformCase builds one case (for platform p, when set) and compares it
// with the expectations recorded from BuildKit.
func conformCase(t *testing.T, root, ctxDir, caseDir, name string, meta conformance.Case, p string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.tar")
	extra := []string{"-t", "conform/" + name + ":latest", "-o", "type=docker,dest=" + out}
	if p != "" {
		extra = append(extra, "--platform", p)
	}
	log, code := kiln(t, buildArgs(root, ctxDir, meta, extra...)...)
	checkNoLeaks(t, root)
	if code != 0 {
		t.Fatalf("kiln build exited %d:\n%s", code, log)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("image does not validate: %v", err)
	}
	base := baseImageFor(t, meta.Base, p)
	cfg, err := conformance.Config(img)
	if err != nil {
		t.Fatal(err)
	}
	delta, err := conformance.DeltaOf(base, img)
	if err != nil {
		t.Fatal(err)
	}
	exp := conformance.ExpectedDir(caseDir, p)
	if *update {
		if err := os.MkdirAll(exp, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	compare(t, filepath.Join(exp, "config.txt"), cfg)
	got := strings.Join(delta, "\n") + "\n"
	if meta.Loose && !*update {
		want, err := os.ReadFile(filepath.Join(exp, "fs.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if conformance.StripContent(string(want)) != conformance.StripContent(got) {
			t.Errorf("fs.txt differs from BuildKit's result (sizes and digests aside):\n%s", conformance.StripContent(got))
		}
	} else {
		compare(t, filepath.Join(exp, "fs.txt"), got)
	}
}

// baseImageFor is the case's base for platform p (from an index, the
// entry of p), the default one when p is "".
func baseImageFor(t *testing.T, ref, p string) v1.Image {
	t.Helper()
	if p == "" || ref == "scratch" {
		return baseImage(t, ref)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithPlatform(*plat))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func baseImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	if ref == "scratch" {
		return empty.Image
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func compare(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (record expectations with go run ./internal/conformance/record)", err)
	}
	if string(want) == got {
		return
	}
	wl, gl := strings.Split(string(want), "\n"), strings.Split(got, "\n")
	wm, gm := map[string]bool{}, map[string]bool{}
	for _, l := range wl {
		wm[l] = true
	}
	for _, l := range gl {
		gm[l] = true
	}
	var diff []string
	for _, l := range wl {
		if !gm[l] {
			diff = append(diff, "want: "+l)
		}
	}
	for _, l := range gl {
		if !wm[l] {
			diff = append(diff, "got:  "+l)
		}
	}
	t.Errorf("%s differs from BuildKit's result:\n%s", filepath.Base(file), strings.Join(diff, "\n"))
}

// TestErrors checks that each broken Dockerfile fails with exit code 1 and
// a message naming the line.
func TestErrors(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	dir := filepath.Join("..", "..", "testdata", "errors")
	for _, name := range caseNames(t, dir) {
		t.Run(name, func(t *testing.T) {
			ctxDir, meta := prepareCase(t, filepath.Join(dir, name), reg)
			log, code := kiln(t, buildArgs(root, ctxDir, meta)...)
			checkNoLeaks(t, root)
			if code != 1 {
				t.Errorf("exit code %d, want 1; output:\n%s", code, log)
			}
			if !strings.Contains(log, meta.ExpectError) {
				t.Errorf("output lacks %q:\n%s", meta.ExpectError, log)
			}
			if strings.Contains(log, "panic") {
				t.Errorf("kiln panicked:\n%s", log)
			}
		})
	}
}

// checkNoLeaks fails when a mount under root or a process of the build
// outlived kiln.
func checkNoLeaks(t *testing.T, root string) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, root) {
			t.Errorf("mount left behind: %s", l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(root)) {
			t.Errorf("process left behind: %s", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// An image built with -t is a base for the next build, with no registry.
func TestLocalImageAsBase(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	write := func(s string) {
		if err := os.WriteFile(df, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("FROM " + reg + "/library/busybox:latest\nRUN echo base > /base\n")
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", "local/base:1", dir); code != 0 {
		t.Fatalf("building the base: exit %d\n%s", code, log)
	}
	write("FROM local/base:1\nRUN cat /base > /derived\n")
	out := filepath.Join(t.TempDir(), "rootfs")
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "-o", "type=local,dest="+out, dir); code != 0 {
		t.Fatalf("building FROM the local image: exit %d\n%s", code, log)
	}
	got, err := os.ReadFile(filepath.Join(out, "derived"))
	if err != nil || string(got) != "base\n" {
		t.Fatalf("/derived = %q, %v; want \"base\\n\"", got, err)
	}
}

// --on-error=keep keeps a failed RUN's filesystem; kiln debug runs in it
// with the step's settings, and --rm discards it.
func TestDebugFailedStep(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root, dir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+reg+"/library/busybox:latest\nWORKDIR /app\nENV FOO=bar\nRUN echo partial > /app/partial && false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log, code := kiln(t, "build", "--root", root, "--progress=plain", "--on-error=keep", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, log)
	}
	m := regexp.MustCompile(`kiln debug (\S+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no kiln debug hint in:\n%s", log)
	}
	cmd := exec.Command(kilnBin, "--root", root, "debug", m[1])
	cmd.Stdin = strings.NewReader("cat /app/partial; echo \"FOO=$FOO in $(pwd)\"; exit 7\n")
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("debug shell: %v, want exit status 7", err)
	}
	if want := "partial\nFOO=bar in /app\n"; string(out) != want {
		t.Errorf("debug shell printed %q, want %q", out, want)
	}
	if log, code := kiln(t, "--root", root, "debug", "--rm", m[1]); code != 0 {
		t.Errorf("debug --rm: exit %d\n%s", code, log)
	}
	if _, code := kiln(t, "--root", root, "debug", m[1]); code != 2 {
		t.Errorf("debug after --rm: exit %d, want 2", code)
	}
	checkNoLeaks(t, root)
}
