package main

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestAnnotations pushes to a real registry with --annotation at every
// level buildx knows, and writes OCI archives with annotation output
// options: each annotation is where buildx puts it, and a level the
// output cannot hold is refused.
func TestAnnotations(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	ctxDir := registryContext(t, "FROM "+reg+"/library/busybox:latest\nCOPY greeting /greeting\n")

	t.Run("push", func(t *testing.T) {
		ref := reg + "/ann/app:1"
		out, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", ref, "--push",
			"--annotation", "org.example.m=1",
			"--annotation", "index,manifest:org.example.both=2",
			"--annotation", "manifest-descriptor:org.example.md=3",
			"--annotation", "manifest[linux/amd64]:org.example.p=4",
			ctxDir)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(r)
		if err != nil {
			t.Fatalf("the push (with its default provenance) is no index: %v", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if im.Annotations["org.example.both"] != "2" || im.Annotations["org.example.m"] != "" {
			t.Errorf("index annotations %v, want org.example.both=2 alone", im.Annotations)
		}
		var imgDesc *v1.Descriptor
		for i, d := range im.Manifests {
			if d.Platform != nil && d.Platform.Architecture == "amd64" {
				imgDesc = &im.Manifests[i]
			} else if d.Annotations["org.example.md"] != "" {
				t.Errorf("the attestation manifest's entry got the descriptor annotation: %v", d.Annotations)
			}
		}
		if imgDesc == nil {
			t.Fatalf("no linux/amd64 entry in %+v", im.Manifests)
		}
		if imgDesc.Annotations["org.example.md"] != "3" {
			t.Errorf("image entry annotations %v, want org.example.md=3", imgDesc.Annotations)
		}
		img, err := idx.Image(imgDesc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{"org.example.m": "1", "org.example.both": "2", "org.example.p": "4"} {
			if m.Annotations[k] != v {
				t.Errorf("manifest annotation %s = %q, want %q (all: %v)", k, m.Annotations[k], v, m.Annotations)
			}
		}
		// The attestation names the annotated manifest.
		for _, d := range im.Manifests {
			if ref := d.Annotations["vnd.docker.reference.digest"]; ref != "" && ref != imgDesc.Digest.String() {
				t.Errorf("the attestation refers to %s, not the annotated manifest %s", ref, imgDesc.Digest)
			}
		}
	})

	t.Run("oci archive options", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "out.tar")
		out, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", "example.com/app:1", "--provenance=true",
			"-o", "type=oci,dest="+dest+",annotation-index-descriptor.org.example.id=5,annotation.org.example.m=6,annotation-index.org.example.i=7",
			ctxDir)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		files := ociArchiveFiles(t, dest)
		var layout v1.IndexManifest
		if err := json.Unmarshal(files["index.json"], &layout); err != nil || len(layout.Manifests) != 1 {
			t.Fatalf("index.json: %v %s", err, files["index.json"])
		}
		e := layout.Manifests[0]
		if e.Annotations["org.example.id"] != "5" || e.Annotations["io.containerd.image.name"] != "example.com/app:1" {
			t.Errorf("index.json entry annotations %v", e.Annotations)
		}
		var idx v1.IndexManifest
		json.Unmarshal(files["blobs/sha256/"+e.Digest.Hex], &idx)
		if idx.Annotations["org.example.i"] != "7" {
			t.Errorf("index annotations %v", idx.Annotations)
		}
		var m v1.Manifest
		json.Unmarshal(files["blobs/sha256/"+idx.Manifests[0].Digest.Hex], &m)
		if m.Annotations["org.example.m"] != "6" {
			t.Errorf("manifest annotations %v", m.Annotations)
		}
	})

	t.Run("single manifest descriptor", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "out.tar")
		out, code := kiln(t, "build", "--root", root, "--progress=plain", "-o", "type=oci,dest="+dest,
			"--annotation", "manifest-descriptor:org.example.md=8", ctxDir)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		var layout v1.IndexManifest
		json.Unmarshal(ociArchiveFiles(t, dest)["index.json"], &layout)
		if len(layout.Manifests) != 1 || layout.Manifests[0].Annotations["org.example.md"] != "8" {
			t.Errorf("index.json %+v, want the manifest's entry annotated", layout.Manifests)
		}
	})

	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"index without an index", []string{"-o", "type=oci,dest=" + filepath.Join(t.TempDir(), "x.tar"), "--annotation", "index:k=v"}, 1, "index annotations need an image index"},
		{"docker has no index", []string{"-o", "type=docker,dest=" + filepath.Join(t.TempDir(), "x.tar"), "--annotation", "index-descriptor:k=v"}, 1, "index annotations need an image index"},
		{"platform not built", []string{"-o", "type=oci,dest=" + filepath.Join(t.TempDir(), "x.tar"), "--annotation", "manifest[linux/arm64]:k=v"}, 1, "produced no linux/arm64 image"},
		{"no value", []string{"--annotation", "k"}, 2, `--annotation "k": want KEY=VALUE`},
		{"unknown type", []string{"--annotation", "layer:k=v"}, 2, `unknown annotation type "layer"`},
		{"bad option", []string{"-o", "type=oci,dest=x.tar,annotation-config.k=v"}, 2, `unknown annotation type "config"`},
		{"not for local", []string{"-o", "type=local,dest=x,annotation.k=v"}, 2, `unknown key "annotation.k" for type=local`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build", "--root", root, "--progress=plain"}, tt.args...)
			out, code := kiln(t, append(args, ctxDir)...)
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, tt.wantCode, tt.want, out)
			}
		})
	}
}

// ociArchiveFiles reads an OCI archive's files by name.
func ociArchiveFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}
