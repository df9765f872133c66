package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestArchiveRoundTrip(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		spec      string // -o flag, minus dest
		names     []string
		wantFull  []string // io.containerd.image.name of each index entry
		wantTags  []string // org.opencontainers.image.ref.name of each entry
		wantRepo  []string // manifest.json RepoTags (docker only)
		wantEmpty bool     // an image with no layers
	}{
		{name: "oci untagged", spec: "type=oci", wantFull: []string{""}, wantTags: []string{""}},
		{name: "oci one name", spec: "type=oci", names: []string{"busybox"},
			wantFull: []string{"docker.io/library/busybox:latest"}, wantTags: []string{"latest"}},
		{name: "oci two names", spec: "type=oci", names: []string{"127.0.0.1:5000/team/app:1.4", "user/app:dev"},
			wantFull: []string{"127.0.0.1:5000/team/app:1.4", "docker.io/user/app:dev"}, wantTags: []string{"1.4", "dev"}},
		{name: "oci name attribute replaces -t", spec: "type=oci,name=example.com/x:y", names: []string{"ignored"},
			wantFull: []string{"example.com/x:y"}, wantTags: []string{"y"}},
		{name: "oci empty image", spec: "type=oci", wantEmpty: true, wantFull: []string{""}, wantTags: []string{""}},
		{name: "docker untagged", spec: "type=docker", wantFull: []string{""}, wantTags: []string{""}},
		{name: "docker tags", spec: "type=docker", names: []string{"busybox", "docker.io/library/alpine:3", "localhost:5000/a/b"},
			wantFull: []string{"docker.io/library/busybox:latest", "docker.io/library/alpine:3", "localhost:5000/a/b:latest"},
			wantTags: []string{"latest", "3", "latest"},
			wantRepo: []string{"busybox:latest", "alpine:3", "localhost:5000/a/b:latest"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := randomImage(t)
			if tt.wantEmpty {
				img = empty.Image
			}
			dest := filepath.Join(t.TempDir(), "out.tar")
			outs, err := ParseOutputs([]string{tt.spec + ",dest=" + dest})
			if err != nil {
				t.Fatal(err)
			}
			if err := Write(ctx, img, outs[0], tt.names); err != nil {
				t.Fatal(err)
			}
			if got := dirNames(t, filepath.Dir(dest)); !slices.Equal(got, []string{"out.tar"}) {
				t.Errorf("directory holds %v, want only out.tar", got)
			}

			// The OCI layout inside either archive.
			dir := untar(t, dest)
			ii, err := layout.ImageIndexFromPath(dir)
			if err != nil {
				t.Fatal(err)
			}
			im, err := ii.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			want, _ := img.Digest()
			var full, tags []string
			for _, d := range im.Manifests {
				if d.Digest != want {
					t.Errorf("index entry %s, want %s", d.Digest, want)
				}
				full = append(full, d.Annotations[annotationImageName])
				tags = append(tags, d.Annotations[annotationRefName])
			}
			if !slices.Equal(full, tt.wantFull) || !slices.Equal(tags, tt.wantTags) {
				t.Errorf("index names %q tags %q, want %q %q", full, tags, tt.wantFull, tt.wantTags)
			}
			got, err := ii.Image(want)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(got); err != nil {
				t.Errorf("image in layout: %v", err)
			}

			_, err = os.Stat(filepath.Join(dir, "manifest.json"))
			if docker := strings.Contains(tt.spec, "docker"); docker != (err == nil) {
				t.Fatalf("manifest.json present = %v for %s", err == nil, tt.spec)
			}
			if !strings.Contains(tt.spec, "docker") {
				return
			}
			// What `docker load` reads.
			var m []dockerManifestEntry
			b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if len(m) != 1 || !slices.Equal(m[0].RepoTags, tt.wantRepo) {
				t.Fatalf("manifest.json %s, want RepoTags %q", b, tt.wantRepo)
			}
			var tag *name.Tag
			if len(tt.wantRepo) > 0 {
				tg, err := name.NewTag(tt.wantRepo[len(tt.wantRepo)-1])
				if err != nil {
					t.Fatal(err)
				}
				tag = &tg
			}
			loaded, err := tarball.ImageFromPath(dest, tag)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(loaded); err != nil {
				t.Errorf("docker archive image: %v", err)
			}
			sameContent(t, loaded, img)
		})
	}
}

// sameContent checks config and layers: a docker archive carries no
// manifest, so the loaded image's manifest digest is not the original's.
func sameContent(t *testing.T, got, want v1.Image) {
	t.Helper()
	gc, _ := got.ConfigName()
	wc, _ := want.ConfigName()
	if gc != wc {
		t.Errorf("config %s, want %s", gc, wc)
	}
	gl, _ := got.Layers()
	wl, _ := want.Layers()
	if len(gl) != len(wl) {
		t.Fatalf("%d layers, want %d", len(gl), len(wl))
	}
	for i := range gl {
		gd, _ := gl[i].Digest()
		wd, _ := wl[i].Digest()
		if gd != wd {
			t.Errorf("layer %d is %s, want %s (recompressed?)", i, gd, wd)
		}
	}
}

// TestArchiveGolden pins the archive's shape to BuildKit's: entry order,
// modes, index.json and manifest.json. Byte-stable, so deterministic too.
func TestArchiveGolden(t *testing.T) {
	img := imageOf(t, rawLayer(t, dir("etc/", 0o755), file("etc/hostname", "kiln\n")), rawLayer(t, file("hello", "hi\n")))
	for _, tt := range []struct {
		golden string
		write  func(ctx context.Context, img v1.Image, dest string, names []string) error
	}{
		{"oci-archive.golden", OCIArchive},
		{"docker-archive.golden", DockerArchive},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "a.tar")
			if err := tt.write(context.Background(), img, dest, []string{"busybox", "127.0.0.1:5000/team/app:1.4"}); err != nil {
				t.Fatal(err)
			}
			hs, bodies := tarHeaders(t, dest)
			var buf bytes.Buffer
			for _, h := range hs {
				fmt.Fprintf(&buf, "%c %04o %5d %s %s\n", h.Typeflag, h.Mode, h.Size, h.ModTime.UTC().Format("2006-01-02"), h.Name)
			}
			for _, n := range []string{"index.json", "manifest.json", "oci-layout"} {
				if b, ok := bodies[n]; ok {
					fmt.Fprintf(&buf, "\n%s:\n%s\n", n, b)
				}
			}
			golden(t, tt.golden, buf.Bytes())
		})
	}
}

// failingLayer is a real layer whose compressed stream fails, or lies,
// part way through.
type failingLayer struct {
	v1.Layer
	corrupt bool
}

func (l failingLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	if l.corrupt {
		b[len(b)/2] ^= 0xff
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	return io.NopCloser(io.MultiReader(bytes.NewReader(b[:len(b)/2]), errReader{})), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestExportFailureLeavesNoFile: a failed export leaves dest as it was (or
// absent) and no temporary file beside it.
func TestExportFailureLeavesNoFile(t *testing.T) {
	good := gzLayer(t, file("a", strings.Repeat("x", 100000)))
	for _, corrupt := range []bool{false, true} {
		img, err := mutate.AppendLayers(empty.Image, failingLayer{good, corrupt})
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name  string
			write func(ctx context.Context, img v1.Image, dest string, names []string) error
		}{
			{"oci", OCIArchive},
			{"docker", DockerArchive},
			{"layout", OCILayout},
		} {
			t.Run(fmt.Sprintf("%s corrupt=%v", tt.name, corrupt), func(t *testing.T) {
				d := t.TempDir()
				dest := filepath.Join(d, "out")
				if tt.name != "layout" {
					if err := os.WriteFile(dest, []byte("previous"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				err := tt.write(context.Background(), img, dest, nil)
				want := "connection reset"
				if corrupt {
					want = "content has digest"
				}
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want one mentioning %q", err, want)
				}
				if tt.name == "layout" {
					// No index.json: the half-written image is not in the layout,
					// and no blob file is half written.
					if _, err := os.Stat(filepath.Join(dest, "index.json")); err == nil {
						t.Error("index.json written although a blob failed")
					}
					ld, _ := good.Digest()
					if _, err := os.Stat(filepath.Join(dest, "blobs", "sha256", ld.Hex)); err == nil {
						t.Error("failed layer blob left in the layout")
					}
					for _, n := range dirNames(t, filepath.Join(dest, "blobs", "sha256")) {
						if strings.HasPrefix(n, ".") {
							t.Errorf("temporary file %s left in the layout", n)
						}
					}
					return
				}
				if b, _ := os.ReadFile(dest); string(b) != "previous" {
					t.Errorf("dest holds %q, want the previous content", b)
				}
				if got := dirNames(t, d); !slices.Equal(got, []string{"out"}) {
					t.Errorf("directory holds %v, want only out", got)
				}
			})
		}
	}
}

func TestExportCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dest := filepath.Join(t.TempDir(), "out.tar")
	if err := OCIArchive(ctx, randomImage(t), dest, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("cancelled export left a file")
	}
}

func TestParseNames(t *testing.T) {
	tests := []struct {
		in                  string
		full, familiar, tag string
		wantErr             string
	}{
		{in: "busybox", full: "docker.io/library/busybox:latest", familiar: "busybox:latest", tag: "latest"},
		{in: "docker.io/library/busybox:1.36", full: "docker.io/library/busybox:1.36", familiar: "busybox:1.36", tag: "1.36"},
		{in: "index.docker.io/user/app", full: "docker.io/user/app:latest", familiar: "user/app:latest", tag: "latest"},
		{in: "127.0.0.1:5000/library/busybox", full: "127.0.0.1:5000/library/busybox:latest", familiar: "127.0.0.1:5000/library/busybox:latest", tag: "latest"},
		{in: "localhost/app:v1", full: "localhost/app:v1", familiar: "localhost/app:v1", tag: "v1"},
		{in: "ghcr.io/o/r/deep:x", full: "ghcr.io/o/r/deep:x", familiar: "ghcr.io/o/r/deep:x", tag: "x"},
		{in: "Upper/Case", wantErr: "parsing image name"},
		{in: "busybox@sha256:" + strings.Repeat("a", 64), wantErr: "digest"},
		{in: "", wantErr: "parsing image name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseNames([]string{tt.in})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := imageName{full: tt.full, familiar: tt.familiar, tag: tt.tag}
			if got[0] != want {
				t.Errorf("got %+v, want %+v", got[0], want)
			}
		})
	}
}
