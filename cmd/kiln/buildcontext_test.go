package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/internal/conformance"
	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/planner"
)

// writeTree writes files (path → content) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		f := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// buildWith builds Dockerfile text df in a fresh context with the extra
// flags and returns the local output directory and the log.
func buildWith(t *testing.T, root, df string, extra ...string) (string, string) {
	t.Helper()
	ctxDir := t.TempDir()
	writeTree(t, ctxDir, map[string]string{"Dockerfile": df})
	out := filepath.Join(t.TempDir(), "out")
	args := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=local,dest=" + out}, extra...)
	log, code := kiln(t, append(args, ctxDir)...)
	checkNoLeaks(t, root)
	if code != 0 {
		t.Fatalf("kiln build exited %d:\n%s", code, log)
	}
	return out, log
}

func wantFile(t *testing.T, dir, p, want string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", p, got, want)
	}
}

func wantMissing(t *testing.T, dir, p string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
		t.Errorf("%s exists; it should not", p)
	}
}

// A directory named context serves FROM NAME (a scratch-based filesystem),
// COPY --from=NAME and RUN --mount from=NAME, through its own
// .dockerignore; it is hashed by content, so a rebuild is a cache hit and
// a changed file a miss.
func TestBuildContextDir(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	other := t.TempDir()
	writeTree(t, other, map[string]string{
		"a.txt":         "from other\n",
		"sub/b.txt":     "b\n",
		"ignored.txt":   "must not be seen\n",
		".dockerignore": "ignored.txt\n",
	})
	df := `FROM foo AS fromdir
FROM ` + reg + `/library/busybox:latest
COPY --from=foo /a.txt /copied
COPY --from=fromdir / /fromdir/
RUN --mount=from=foo,target=/m cat /m/a.txt > /mounted && if test -e /m/ignored.txt; then echo leaked; exit 1; fi && stat -c %u:%g /m/sub/b.txt > /owner
`
	// BuildKit's client sends local directories with uid and gid 0: a
	// mount shows them as root's, like a COPY does.
	if err := os.Chown(filepath.Join(other, "sub", "b.txt"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	flag := "--build-context=foo=" + other
	out, _ := buildWith(t, root, df, flag)
	wantFile(t, out, "copied", "from other\n")
	wantFile(t, out, "mounted", "from other\n")
	wantFile(t, out, "fromdir/a.txt", "from other\n")
	wantFile(t, out, "fromdir/sub/b.txt", "b\n")
	wantMissing(t, out, "fromdir/ignored.txt")
	wantFile(t, out, "owner", "0:0\n")

	_, log := buildWith(t, root, df, flag)
	if strings.Count(log, "CACHED") < 4 {
		t.Errorf("an unchanged named context should make every step a cache hit:\n%s", log)
	}

	writeTree(t, other, map[string]string{"a.txt": "changed\n"})
	out, log = buildWith(t, root, df, flag)
	if strings.Count(log, "CACHED") >= 4 {
		t.Errorf("a changed file of the named context should miss the cache:\n%s", log)
	}
	wantFile(t, out, "copied", "changed\n")
	wantFile(t, out, "mounted", "changed\n")
	wantFile(t, out, "fromdir/a.txt", "changed\n")
}

// docker-image:// replaces the image of that name everywhere: alpine is in
// no registry the test can reach.
func TestBuildContextImage(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	df := `FROM alpine
COPY --from=docker.io/library/alpine:latest /bin/busybox /bb
RUN --mount=from=alpine,target=/m test -x /m/bin/busybox && echo ran > /ran
`
	out, _ := buildWith(t, root, df, "--build-context", "alpine=docker-image://"+reg+"/library/busybox:latest")
	wantFile(t, out, "ran", "ran\n")
	if st, err := os.Stat(filepath.Join(out, "bb")); err != nil || st.Size() == 0 {
		t.Errorf("/bb: %v", err)
	}
}

// A named context replaces the stage of that name: its instructions do not
// run, and COPY --from and FROM of the stage see the context.
func TestBuildContextOverridesStage(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"artifact": "from the context\n"})
	df := `FROM ` + reg + `/library/busybox:latest AS builder
RUN echo built-by-stage > /artifact
FROM ` + reg + `/library/busybox:latest
COPY --from=builder /artifact /artifact
`
	out, log := buildWith(t, root, df, "--build-context", "builder="+dir)
	wantFile(t, out, "artifact", "from the context\n")
	if strings.Contains(log, "built-by-stage") {
		t.Errorf("the replaced stage ran:\n%s", log)
	}
}

// oci-layout:// reads an image from a local OCI layout, by tag or digest,
// with no registry: the layout is what kiln's own -o type=oci,tar=false
// writes.
func TestBuildContextOCILayout(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	ctxDir := t.TempDir()
	writeTree(t, ctxDir, map[string]string{"Dockerfile": "FROM " + reg + "/library/busybox:latest\nRUN echo layered > /marker\nENV FROM_LAYOUT=1\n"})
	layout := filepath.Join(t.TempDir(), "layout")
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", "base:v1", "-t", "base:v3", "-o", "type=oci,dest="+layout+",tar=false", ctxDir); code != 0 {
		t.Fatalf("building the layout: exit %d\n%s", code, log)
	}
	raw, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil || len(idx.Manifests) == 0 {
		t.Fatalf("index.json: %v %s", err, raw)
	}
	// another store: nothing of the base is known there
	for _, spec := range []string{layout + ":v1", layout + "@" + idx.Manifests[0].Digest, layout + ":v3"} {
		t.Run(filepath.Base(spec), func(t *testing.T) {
			df := "FROM base\nCOPY --from=base /marker /copied\nRUN cat /marker > /seen && echo $FROM_LAYOUT > /env\n"
			out, _ := buildWith(t, t.TempDir(), df, "--build-context", "base=oci-layout://"+spec)
			wantFile(t, out, "seen", "layered\n")
			wantFile(t, out, "copied", "layered\n")
			wantFile(t, out, "env", "1\n")
		})
	}
	// a tag the layout lacks (it holds two: a layout of one image would
	// give that image whatever the tag, as buildx does)
	ctx2 := t.TempDir()
	writeTree(t, ctx2, map[string]string{"Dockerfile": "FROM base\n"})
	log, code := kiln(t, "build", "--root", root, "--progress=plain", "--build-context", "base=oci-layout://"+layout+":v2", ctx2)
	if code != 1 || !strings.Contains(log, `no image tagged "v2"`) || !strings.Contains(log, "--build-context base") {
		t.Errorf("a missing tag: exit %d\n%s", code, log)
	}

	// A tampered layer blob is refused, and so is a blobs dir that is a
	// symlink to somewhere else; a fresh store has nothing to reuse.
	blobs := filepath.Join(layout, "blobs", "sha256")
	ents, err := os.ReadDir(blobs)
	if err != nil {
		t.Fatal(err)
	}
	var biggest string
	var size int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Size() > size {
			biggest, size = e.Name(), fi.Size()
		}
	}
	// a well-formed layer, but not the one the manifest names
	rc, err := testutil.CraftedLayer(t, testutil.File("planted", 0o644, "planted\n")).Compressed()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blobs, biggest), data, 0o644); err != nil {
		t.Fatal(err)
	}
	writeTree(t, ctx2, map[string]string{"Dockerfile": "FROM base\nRUN true\n"})
	log, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--build-context", "base=oci-layout://"+layout+":v1", ctx2)
	if code != 1 || !strings.Contains(log, "tampered") {
		t.Errorf("a tampered layer: exit %d\n%s", code, log)
	}
	moved := filepath.Join(t.TempDir(), "blobs")
	if err := os.Rename(filepath.Join(layout, "blobs"), moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(moved, filepath.Join(layout, "blobs")); err != nil {
		t.Fatal(err)
	}
	log, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--build-context", "base=oci-layout://"+layout+":v1", ctx2)
	if code != 1 || !strings.Contains(log, "not a symlink") {
		t.Errorf("a symlinked blobs dir: exit %d\n%s", code, log)
	}
}

// Values kiln cannot use are refused before the build, naming the flag.
func TestBuildContextBadValues(t *testing.T) {
	root := t.TempDir()
	ctxDir := t.TempDir()
	writeTree(t, ctxDir, map[string]string{"Dockerfile": "FROM foo\n"})
	for _, tc := range []struct{ value, want string }{
		{"foo=ftp://example.com/x", "unsupported context source ftp://"},
		{"foo=" + filepath.Join(ctxDir, "missing"), "no such file or directory"},
		{"Foo=" + ctxDir, "invalid context name"},
		{"foo", "want NAME=VALUE"},
		{"scratch=" + ctxDir, "reserved"},
	} {
		log, code := kiln(t, "build", "--root", root, "--build-context", tc.value, ctxDir)
		if code != 2 || !strings.Contains(log, "--build-context") || !strings.Contains(log, tc.want) {
			t.Errorf("--build-context %s: exit %d, want 2 and %q:\n%s", tc.value, code, tc.want, log)
		}
	}
}

// git and https contexts need the remote fetcher; without it the build
// says so when a step uses one.
func TestBuildContextRemoteUnsupported(t *testing.T) {
	needRoot(t)
	if planner.FetchRemoteContext != nil {
		t.Skip("this kiln fetches remote contexts: the remote source tests cover them")
	}
	root := t.TempDir()
	ctxDir := t.TempDir()
	writeTree(t, ctxDir, map[string]string{"Dockerfile": "FROM src\n"})
	log, code := kiln(t, "build", "--root", root, "--progress=plain", "--build-context", "src=https://127.0.0.1:1/ctx.tar.gz", ctxDir)
	if code != 1 || !strings.Contains(log, "not supported by this kiln yet") {
		t.Errorf("exit %d, want 1 and a clear refusal:\n%s", code, log)
	}
}

// TestBuildContextCase builds testdata/buildcontext/oci-layout FROM an OCI
// layout holding a two-platform index and compares the image config and
// its changes on busybox with the expected files, like a conformance case
// (conform.sh has no way to pass --build-context).
func TestBuildContextCase(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	caseDir := filepath.Join("testdata", "buildcontext", "oci-layout")
	ctxDir := filepath.Join(t.TempDir(), "ctx")
	if err := conformance.PrepareContext(caseDir, ctxDir); err != nil {
		t.Fatal(err)
	}
	busybox := testutil.BusyboxImage(t)
	arm := testutil.ImageOn(t, busybox, testutil.CraftedLayer(t, testutil.File("arm64", 0o644, "wrong platform\n")))
	arm, err := mutate.ConfigFile(arm, &v1.ConfigFile{OS: "linux", Architecture: "arm64", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: busybox, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "image.tar")
	// KILN_RECORD_BUILDKIT=1 builds the same case with the peers' BuildKit
	// and records expected/ from it; buildx passes an oci-layout context
	// as STORE:TAG@DIGEST, the tag resolved on the client.
	record := os.Getenv("KILN_RECORD_BUILDKIT") == "1"
	if record {
		dg, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/tmp/peers/bin/buildctl", "--addr", "unix:///tmp/peers/buildkitd.sock", "build", "--progress=plain",
			"--frontend", "dockerfile.v0", "--local", "context="+ctxDir, "--local", "dockerfile="+ctxDir,
			"--oci-layout", "base="+layoutDir, "--opt", "context:base=oci-layout://base:v1@"+dg.String(),
			"--local", "files="+filepath.Join(ctxDir, "files"), "--opt", "context:files=local:files",
			"--output", "type=docker,name=case/oci-layout:latest,dest="+out)
		if log, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("buildctl: %v\n%s", err, log)
		}
	} else {
		log, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", "case/oci-layout:latest", "-o", "type=docker,dest="+out,
			"--build-context", "base=oci-layout://"+layoutDir+":v1", "--build-context", "files="+filepath.Join(ctxDir, "files"), ctxDir)
		checkNoLeaks(t, root)
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
	delta, err := conformance.DeltaOf(busybox, img)
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
}
