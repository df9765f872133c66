package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/internal/testutil"
)

// writeFiles writes name → content under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for n, c := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func linkImageLayers(t *testing.T, tarPath string) (v1.Image, []v1.Hash) {
	t.Helper()
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("image does not validate: %v", err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return img, out
}

// TestCopyLinkRebase: a COPY --link layer does not depend on the image
// below it. With another base image the step is a cache hit, the very same
// blob sits on top of the new base's layers, and the steps after it run
// on the new chain (their RUN reads the linked file).
func TestCopyLinkRebase(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base1 := reg + "/library/busybox:latest"
	r, err := name.ParseReference(base1, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	// base2: busybox plus one more layer, a different image
	extra := tarLayer(t, map[string]string{"etc/base2": "two\n"})
	img2, err := mutate.AppendLayers(bb, extra)
	if err != nil {
		t.Fatal(err)
	}
	base2 := testutil.Push(t, img2, reg+"/test/base2:latest")

	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"Dockerfile": "ARG BASE\nFROM $BASE\nCOPY --link app.txt /opt/app/\nRUN (cat /opt/app/app.txt; cat /etc/base2 2>/dev/null; true) > /seen\n",
		"app.txt":    "linked\n",
	})
	root := t.TempDir()
	build := func(base string) (string, []v1.Hash, v1.Image) {
		out := filepath.Join(t.TempDir(), "image.tar")
		log, code := kiln(t, "build", "--root", root, "--progress=plain", "--build-arg", "BASE="+base, "-t", "link:test", "-o", "type=docker,dest="+out, ctxDir)
		if code != 0 {
			t.Fatalf("kiln build exited %d:\n%s", code, log)
		}
		img, layers := linkImageLayers(t, out)
		return log, layers, img
	}
	log1, layers1, _ := build(base1)
	if st := stepStates(log1)["COPY --link app.txt /opt/app/"]; st != "DONE" {
		t.Fatalf("first build: COPY --link is %q, want DONE:\n%s", st, log1)
	}
	log2, layers2, img2Built := build(base2)
	states := stepStates(log2)
	if st := states["COPY --link app.txt /opt/app/"]; st != "CACHED" {
		t.Errorf("COPY --link on a new base is %q, want CACHED (not run again):\n%s", st, log2)
	}
	if st := states["RUN (cat /opt/app/app.txt; cat /etc/base2 2>/dev/null; true) > /seen"]; st != "DONE" {
		t.Errorf("RUN after COPY --link on a new base is %q, want DONE (it runs on the new chain)", st)
	}
	// layers: base1 (1) + link + run; base2 (2) + link + run
	if len(layers1) != 3 || len(layers2) != 4 {
		t.Fatalf("layer counts %d and %d, want 3 and 4", len(layers1), len(layers2))
	}
	if layers1[1] != layers2[2] {
		t.Errorf("the --link layer was not rebased: %s in the first image, %s in the second", layers1[1], layers2[2])
	}
	// the RUN saw the linked file and the new base's file
	ls, err := img2Built.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := layerFiles(t, ls[3])
	if got := files["seen"]; got != "linked\ntwo\n" {
		t.Errorf("/seen = %q, want the linked file then the new base's", got)
	}
	// a linked layer holds what it copies only, with its parents
	linked := layerFiles(t, ls[2])
	if len(linked) != 1 || linked["opt/app/app.txt"] != "linked\n" {
		t.Errorf("the --link layer holds %v, want only opt/app/app.txt", linked)
	}
}

// TestCopyLinkChownByName: names cannot be resolved on the empty tree of a
// linked copy, so BuildKit refuses them; the message names the line.
func TestCopyLinkChownByName(t *testing.T) {
	needRoot(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"Dockerfile": "FROM scratch\nCOPY --link --chown=nobody a /a\n",
		"a":          "a\n",
	})
	log, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", ctxDir)
	if code == 0 || !strings.Contains(log, "Dockerfile:2") || !strings.Contains(log, "use numeric uid[:gid]") {
		t.Errorf("exit %d, want a refusal naming line 2 and numeric ids:\n%s", code, log)
	}
}

// tarLayer is a layer of regular files.
func tarLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, c := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(c))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// layerFiles lists a layer's regular files and their contents.
func layerFiles(t *testing.T, l v1.Layer) map[string]string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[strings.TrimPrefix(h.Name, "./")] = string(data)
		}
	}
}

// TestCopySelectionCache: what --exclude leaves out and what --parents
// does not select are not in the COPY's key; what they keep is, and so
// are the flags themselves.
func TestCopySelectionCache(t *testing.T) {
	needRoot(t)
	ctxDir := t.TempDir()
	df := func(exclude string) string {
		return "FROM scratch\nCOPY --exclude=" + exclude + " docs /d/\nCOPY --parents src/./app/main.txt /p/\n"
	}
	writeFiles(t, ctxDir, map[string]string{
		"Dockerfile":        df("*.md"),
		"docs/a.txt":        "a\n",
		"docs/b.md":         "b\n",
		"src/app/main.txt":  "main\n",
		"src/app/other.txt": "other\n",
	})
	root := t.TempDir()
	const excl, par = "COPY --exclude=*.md docs /d/", "COPY --parents src/./app/main.txt /p/"
	steps := []struct {
		change   map[string]string
		excl     string // the state of the --exclude COPY
		par      string // of the --parents COPY
		exclStep string
	}{
		{nil, "DONE", "DONE", excl},
		{map[string]string{"docs/b.md": "changed\n", "src/app/other.txt": "changed\n"}, "CACHED", "CACHED", excl},
		{map[string]string{"docs/a.txt": "changed\n", "src/app/main.txt": "changed\n"}, "DONE", "DONE", excl},
		{map[string]string{"Dockerfile": df("*.txt")}, "DONE", "DONE", "COPY --exclude=*.txt docs /d/"}, // the step below changed
	}
	for i, st := range steps {
		writeFiles(t, ctxDir, st.change)
		out := filepath.Join(t.TempDir(), "rootfs")
		log, code := kiln(t, "build", "--root", root, "--progress=plain", "-o", "type=local,dest="+out, ctxDir)
		if code != 0 {
			t.Fatalf("build %d exited %d:\n%s", i, code, log)
		}
		states := stepStates(log)
		if states[st.exclStep] != st.excl || states[par] != st.par {
			t.Errorf("build %d: --exclude COPY %s, --parents COPY %s; want %s and %s:\n%s", i, states[st.exclStep], states[par], st.excl, st.par, log)
		}
		if _, err := os.Stat(filepath.Join(out, "p/app/main.txt")); err != nil {
			t.Errorf("build %d: --parents did not copy app/main.txt below the pivot: %v", i, err)
		}
		if _, err := os.Stat(filepath.Join(out, "p/app/other.txt")); err == nil {
			t.Errorf("build %d: --parents copied a path it does not name", i)
		}
	}
}

// TestCopySelectionContained: a context symlink to a host directory named
// by COPY --parents (before and after the pivot) and copied with
// --exclude is resolved inside the context, as every COPY source is: the
// host canary is unchanged and none of its content is in the image.
func TestCopySelectionContained(t *testing.T) {
	needRoot(t)
	c := testutil.NewCanary(t)
	canary, err := os.ReadFile(c.File())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"COPY --parents host/./file /p1/",
		"COPY --parents d/./host/file* /p2/",
		"COPY --parents ../../../../" + strings.TrimPrefix(c.Dir, "/") + "/./file* /p3/",
		"COPY --parents d/** /p4/",
		"COPY --exclude=nothing host d /e/",
	} {
		ctxDir := t.TempDir()
		writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM scratch\n" + line + "\n", "d/keep": "keep\n"})
		for name, target := range map[string]string{"host": c.Dir, "d/host": c.Rel()} {
			if err := os.Symlink(target, filepath.Join(ctxDir, name)); err != nil {
				t.Fatal(err)
			}
		}
		out := filepath.Join(t.TempDir(), "rootfs")
		log, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest="+out, ctxDir)
		c.Check(t)
		filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				if data, _ := os.ReadFile(p); bytes.Equal(data, canary) {
					t.Errorf("%s: %s holds the host canary's content", line, p)
				}
			}
			return nil
		})
		if code != 0 && !strings.Contains(log, "not found") {
			t.Errorf("%s: exit %d, want success or a source not found:\n%s", line, code, log)
		}
		t.Logf("%s: exit %d", line, code)
	}
}
