package cache

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/export"
)

func randomImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t testing.TB, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNormalizeImageName(t *testing.T) {
	for _, tc := range []struct{ in, want, familiar string }{
		{"app", "docker.io/library/app:latest", "app:latest"},
		{"app:1.0", "docker.io/library/app:1.0", "app:1.0"},
		{"docker.io/library/app", "docker.io/library/app:latest", "app:latest"},
		{"index.docker.io/library/app:2", "docker.io/library/app:2", "app:2"},
		{"team/app", "docker.io/team/app:latest", "team/app:latest"},
		{"localhost:5000/app", "localhost:5000/app:latest", "localhost:5000/app:latest"},
		{"registry.example.com/a/b:c", "registry.example.com/a/b:c", "registry.example.com/a/b:c"},
	} {
		got, err := NormalizeImageName(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.in, got, tc.want)
		}
		if f := FamiliarImageName(got); f != tc.familiar {
			t.Errorf("%s: familiar %s, want %s", tc.in, f, tc.familiar)
		}
	}
	for _, bad := range []string{"", "UPPER", "app@sha256:" + "00", "a b"} {
		if got, err := NormalizeImageName(bad); err == nil {
			t.Errorf("%q: got %s, want an error", bad, got)
		}
	}
}

func TestPutImage(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	img := randomImage(t)
	if err := s.PutImage(ctx, []string{"app", "registry.example.com:5000/team/x:1.2"}, img); err != nil {
		t.Fatal(err)
	}
	want := digestOf(t, img)
	for _, ref := range []string{
		"app", "app:latest", "docker.io/library/app", "index.docker.io/library/app:latest",
		"registry.example.com:5000/team/x:1.2",
		"app@" + want.String(),
	} {
		got, ok, err := s.Image(ref)
		if err != nil || !ok {
			t.Fatalf("Image(%s) = %v, %v", ref, ok, err)
		}
		if d := digestOf(t, got); d != want {
			t.Errorf("Image(%s): digest %s, want %s", ref, d, want)
		}
	}
	for _, ref := range []string{"app:2", "other", "registry.example.com:5000/team/x", "other@" + want.String()} {
		if _, ok, err := s.Image(ref); err != nil || ok {
			t.Errorf("Image(%s) = %v, %v; want a miss", ref, ok, err)
		}
	}

	got, _, _ := s.Image("app")
	if err := validate.Image(got); err != nil {
		t.Errorf("stored image does not validate: %v", err)
	}
	// the layers are unpacked too, so the image can be a base
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.DiffID()
		if _, ok, err := s.LayerByDiffID(d); err != nil || !ok {
			t.Errorf("layer %s not unpacked: %v", d, err)
		}
	}

	// a new Open sees the same images
	s2, err := Open(s.Root)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := s2.Images()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("Images() = %v, want 2 entries", entries)
	}
	wantNames := []string{"docker.io/library/app:latest", "registry.example.com:5000/team/x:1.2"}
	cfg, _ := img.ConfigName()
	for i, e := range entries {
		if e.Name != wantNames[i] || e.Digest != want || e.ID != cfg || e.Size <= 0 || e.Created.IsZero() {
			t.Errorf("entry %d = %+v", i, e)
		}
	}
	if got, ok, err := s2.Image("registry.example.com:5000/team/x:1.2"); err != nil || !ok || digestOf(t, got) != want {
		t.Errorf("after reopening: %v %v", ok, err)
	}
}

func TestPutImageRetagAndRemove(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	a, b := randomImage(t), randomImage(t)
	if err := s.PutImage(ctx, []string{"app:1", "app:2"}, a); err != nil {
		t.Fatal(err)
	}
	if err := s.PutImage(ctx, []string{"app:2"}, b); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref  string
		want v1.Image
	}{{"app:1", a}, {"app:2", b}} {
		got, ok, err := s.Image(tc.ref)
		if err != nil || !ok || digestOf(t, got) != digestOf(t, tc.want) {
			t.Errorf("%s: got %v %v", tc.ref, ok, err)
		}
	}
	if err := s.RemoveImage("docker.io/library/app:1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Image("app:1"); ok {
		t.Error("app:1 still there after RemoveImage")
	}
	if err := s.RemoveImage("app:1"); !errors.Is(err, ErrImageNotFound) {
		t.Errorf("second RemoveImage: %v, want ErrImageNotFound", err)
	}
	if entries, _ := s.Images(); len(entries) != 1 || entries[0].Name != "docker.io/library/app:2" {
		t.Errorf("Images() = %+v", entries)
	}
	if err := s.PutImage(ctx, nil, a); err == nil {
		t.Error("PutImage without names succeeded")
	}
	if err := s.PutImage(ctx, []string{"Bad Name"}, a); err == nil {
		t.Error("PutImage with a bad name succeeded")
	}
}

// TestPutImageStoredLayers is the build's case: an image made of layers
// the store already has reads none of their bytes again.
func TestPutImageStoredLayers(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	dir, _ := s.TempDir("upper-")
	buildTree(t, dir)
	info, _, err := s.CommitDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, noBytesLayer{s.Layer(info, ""), t})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutImage(ctx, []string{"built"}, img); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Image("built")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if digestOf(t, got) != digestOf(t, img) {
		t.Error("digest changed")
	}
}

// noBytesLayer fails the test if its bytes are read.
type noBytesLayer struct {
	v1.Layer
	t *testing.T
}

func (l noBytesLayer) Compressed() (io.ReadCloser, error) {
	l.t.Error("Compressed called for a layer that is already stored")
	return nil, errors.New("forbidden")
}

func (l noBytesLayer) Uncompressed() (io.ReadCloser, error) {
	l.t.Error("Uncompressed called for a layer that is already stored")
	return nil, errors.New("forbidden")
}

func TestLoad(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	img := randomImage(t)
	tmp := t.TempDir()
	for _, tc := range []struct {
		format string
		write  func(dest string) error
		// a docker archive written by go-containerregistry has no index:
		// the manifest is rebuilt, so the digest may differ
		sameDigest bool
	}{
		{"oci archive", func(d string) error { return export.OCIArchive(ctx, img, d, []string{"loaded/app:1"}) }, true},
		{"docker archive (kiln)", func(d string) error { return export.DockerArchive(ctx, img, d, []string{"loaded/app:1"}) }, true},
		{"oci layout", func(d string) error { return export.OCILayout(ctx, img, d, []string{"loaded/app:1"}) }, true},
		{"docker archive (ggcr)", func(d string) error {
			tag, _ := name.NewTag("loaded/app:1")
			return tarball.WriteToFile(d, tag, img)
		}, false},
	} {
		t.Run(tc.format, func(t *testing.T) {
			dest := filepath.Join(tmp, filepath.Base(t.Name()))
			if err := tc.write(dest); err != nil {
				t.Fatal(err)
			}
			s := openStore(t)
			entries, err := s.Load(ctx, dest)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name != "docker.io/loaded/app:1" {
				t.Fatalf("Load = %+v", entries)
			}
			got, ok, err := s.Image("loaded/app:1")
			if err != nil || !ok {
				t.Fatal(ok, err)
			}
			if err := validate.Image(got); err != nil {
				t.Error(err)
			}
			if tc.sameDigest && digestOf(t, got) != digestOf(t, img) {
				t.Error("digest changed")
			}
			if ents, _ := os.ReadDir(s.tmp()); len(ents) != 0 {
				t.Errorf("Load left %d entries in tmp", len(ents))
			}
		})
	}

	// a multi-platform index under a name: the linux/amd64 image is loaded
	t.Run("multi-platform layout", func(t *testing.T) {
		other := randomImage(t)
		idx := mutate.AppendManifests(empty.Index,
			mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		)
		dir := filepath.Join(tmp, "multi")
		lp, err := layout.Write(dir, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotationImageName: "docker.io/multi/app:1"})); err != nil {
			t.Fatal(err)
		}
		s := openStore(t)
		if _, err := s.Load(ctx, dir); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.Image("multi/app:1")
		if err != nil || !ok || digestOf(t, got) != digestOf(t, img) {
			t.Fatalf("multi/app:1: %v %v", ok, err)
		}
	})

	unnamed := filepath.Join(tmp, "unnamed.tar")
	if err := export.OCIArchive(ctx, img, unnamed, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := openStore(t).Load(ctx, unnamed); err == nil {
		t.Error("loading an unnamed image succeeded")
	}
	notArchive := filepath.Join(tmp, "Dockerfile")
	os.WriteFile(notArchive, []byte("FROM scratch\n"), 0o644)
	if _, err := openStore(t).Load(ctx, notArchive); err == nil {
		t.Error("loading a Dockerfile succeeded")
	}
}

// builtImage is what a build hands PutImage: an image of stored layers.
func builtImage(b *testing.B, s *Store, layers int) v1.Image {
	b.Helper()
	img := empty.Image
	for i := range layers {
		dir, _ := s.TempDir("upper-")
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte{byte(i)}, 0o644); err != nil {
			b.Fatal(err)
		}
		info, _, err := s.CommitDir(context.Background(), dir)
		if err != nil {
			b.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, s.Layer(info, "")); err != nil {
			b.Fatal(err)
		}
	}
	// mutate recomputes the config on every call: the build's images
	// (package image) and the store's are plain manifests and configs.
	if err := s.PutImage(context.Background(), []string{"bench/tmp"}, img); err != nil {
		b.Fatal(err)
	}
	stored, _, err := s.Image("bench/tmp")
	if err != nil {
		b.Fatal(err)
	}
	if err := s.RemoveImage("bench/tmp"); err != nil {
		b.Fatal(err)
	}
	return stored
}

// BenchmarkPutImage measures `-t NAME` at the end of a no-op rebuild: the
// layers and blobs are stored already and the name holds the same image, so
// it costs reads and stats, no write.
func BenchmarkPutImage(b *testing.B) {
	requireRoot(b)
	s := openStore(b)
	img := builtImage(b, s, 20)
	for b.Loop() {
		if err := s.PutImage(context.Background(), []string{"bench/app:1"}, img); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkImage measures resolving a FROM name in the store, which every
// build does before asking a registry.
func BenchmarkImage(b *testing.B) {
	requireRoot(b)
	s := openStore(b)
	if err := s.PutImage(context.Background(), []string{"bench/app:1"}, builtImage(b, s, 20)); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		img, ok, err := s.Image("bench/app:1")
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
		if _, err := img.Layers(); err != nil {
			b.Fatal(err)
		}
	}
}
