package buildctx

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	ggcrlayout "github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/testutil"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alpine", "alpine"},
		{"alpine:latest", "alpine"},
		{"docker.io/library/alpine:latest", "alpine"},
		{"index.docker.io/library/alpine", "alpine"},
		{"alpine:3.20", "alpine:3.20"},
		{"docker.io/user/app", "user/app"},
		{"127.0.0.1:5000/library/busybox:latest", "127.0.0.1:5000/library/busybox"},
		{"ghcr.io/o/a:1", "ghcr.io/o/a:1"},
		{"builder", "builder"},
	} {
		got, err := Normalize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseFlag(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in      string
		name    string
		want    Source
		wantErr string
	}{
		{in: "foo=" + dir, name: "foo", want: Source{Kind: Dir, Dir: dir}},
		{in: "docker.io/library/alpine:latest=docker-image://busybox:1", name: "alpine", want: Source{Kind: Image, Ref: "busybox:1"}},
		{in: "base=docker-image://scratch", name: "base", want: Source{Kind: Image, Ref: "scratch"}},
		{in: "base=oci-layout://" + dir, name: "base", want: Source{Kind: Layout, Dir: dir}},
		{in: "base=oci-layout://" + dir + ":v1", name: "base", want: Source{Kind: Layout, Dir: dir, Tag: "v1"}},
		{in: "base=oci-layout://" + dir + "@sha256:" + strings.Repeat("a", 64), name: "base", want: Source{Kind: Layout, Dir: dir, Digest: "sha256:" + strings.Repeat("a", 64)}},
		{in: "base=oci-layout://" + dir + ":v1@sha256:" + strings.Repeat("a", 64), name: "base", want: Source{Kind: Layout, Dir: dir, Tag: "v1", Digest: "sha256:" + strings.Repeat("a", 64)}},
		{in: "src=https://example.com/ctx.tar.gz", name: "src", want: Source{Kind: Remote, URL: "https://example.com/ctx.tar.gz"}},
		{in: "src=https://example.com/repo.git#v1:sub", name: "src", want: Source{Kind: Remote, URL: "https://example.com/repo.git#v1:sub"}},
		{in: "src=git@example.com:o/r.git", name: "src", want: Source{Kind: Remote, URL: "git@example.com:o/r.git"}},
		{in: "foo", wantErr: "want NAME=VALUE"},
		{in: "=" + dir, wantErr: "want NAME=VALUE"},
		{in: "Foo=" + dir, wantErr: "invalid context name"},
		{in: "a::b=" + dir, wantErr: "invalid context name"},
		{in: "scratch=" + dir, wantErr: "reserved"},
		{in: "context=" + dir, wantErr: "reserved"},
		{in: "foo=ftp://example.com/x", wantErr: "unsupported context source ftp://"},
		{in: "foo=" + filepath.Join(dir, "missing"), wantErr: "no such file"},
		{in: "foo=" + file, wantErr: "not a directory"},
		{in: "foo=docker-image://UPPER", wantErr: "invalid image reference"},
		{in: "foo=oci-layout://" + dir + "@sha256:xyz", wantErr: "invalid digest"},
		{in: "foo=oci-layout://" + filepath.Join(dir, "missing"), wantErr: "no such file"},
		{in: "foo=target:other", wantErr: "bake"},
	} {
		name, src, err := ParseFlag(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--build-context") {
				t.Errorf("ParseFlag(%q) = %v; want an error naming --build-context with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseFlag(%q): %v", tc.in, err)
			continue
		}
		src.Spec = ""
		if name != tc.name || src != tc.want {
			t.Errorf("ParseFlag(%q) = %q, %+v; want %q, %+v", tc.in, name, src, tc.name, tc.want)
		}
	}
}

// writeLayout writes an OCI layout holding img tagged tag, and an index
// of two platforms tagged "multi", and returns its directory.
func writeLayout(t *testing.T, img v1.Image, tag string, other v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := ggcrlayout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, ggcrlayout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
	if other != nil {
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
			mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		)
		if err := p.AppendIndex(idx, ggcrlayout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "multi"})); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readAll(t *testing.T, img v1.Image) error {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

func TestOpenLayout(t *testing.T) {
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	arm, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeLayout(t, img, "v1", arm)
	want, _ := img.Digest()
	for _, src := range []Source{
		{Kind: Layout, Dir: dir, Tag: "v1"},
		{Kind: Layout, Dir: dir, Digest: want.String()},
		{Kind: Layout, Dir: dir, Tag: "multi"},
	} {
		got, name, err := OpenLayout(src, amd64)
		if err != nil {
			t.Fatalf("%+v: %v", src, err)
		}
		d, _ := got.Digest()
		if d != want || name != "oci-layout@"+want.String() {
			t.Errorf("%+v: got %s (%s), want %s", src, d, name, want)
		}
		if err := readAll(t, got); err != nil {
			t.Errorf("%+v: reading layers: %v", src, err)
		}
	}
	if _, _, err := OpenLayout(Source{Kind: Layout, Dir: dir, Tag: "nope"}, amd64); err == nil || !strings.Contains(err.Error(), `no image tagged "nope"`) {
		t.Errorf("missing tag: %v", err)
	}
	if _, _, err := OpenLayout(Source{Kind: Layout, Dir: dir, Tag: "multi"}, v1.Platform{OS: "linux", Architecture: "s390x"}); err == nil || !strings.Contains(err.Error(), "no image for linux/s390x") {
		t.Errorf("missing platform: %v", err)
	}
	// One image and no tag: the layout's only image, as buildx picks it.
	single := writeLayout(t, arm, "something", nil)
	for _, tag := range []string{"", "other"} {
		if _, _, err := OpenLayout(Source{Kind: Layout, Dir: single, Tag: tag}, amd64); err != nil {
			t.Errorf("single image layout, tag %q: %v", tag, err)
		}
	}
}

// A layout is untrusted: its blobs are read inside it, never through a
// symlink, and never accepted with the wrong digest.
func TestOpenLayoutRefusesEscapes(t *testing.T) {
	canary := testutil.NewCanary(t)
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	manifest, _ := img.Digest()
	layers, _ := img.Layers()
	layerDigest, _ := layers[0].Digest()
	cfgName, _ := img.ConfigName()
	for _, tc := range []struct {
		name    string
		mutate  func(t *testing.T, dir string) Source
		wantErr string
		lazy    bool // the error shows when the layer is read
	}{
		{
			name: "symlinked blobs dir",
			mutate: func(t *testing.T, dir string) Source {
				outside := filepath.Join(t.TempDir(), "blobs")
				must(t, os.Rename(filepath.Join(dir, "blobs"), outside))
				must(t, os.Symlink(outside, filepath.Join(dir, "blobs")))
				return Source{Kind: Layout, Dir: dir, Tag: "v1"}
			},
			wantErr: "not a symlink",
		},
		{
			name: "symlinked blob",
			mutate: func(t *testing.T, dir string) Source {
				p := filepath.Join(dir, "blobs", "sha256", manifest.Hex)
				moved := filepath.Join(t.TempDir(), "m")
				must(t, os.Rename(p, moved))
				must(t, os.Symlink(moved, p))
				return Source{Kind: Layout, Dir: dir, Tag: "v1"}
			},
			wantErr: "not a regular file",
		},
		{
			name: "blob pointing at the host canary",
			mutate: func(t *testing.T, dir string) Source {
				p := filepath.Join(dir, "blobs", "sha256", cfgName.Hex)
				must(t, os.Remove(p))
				must(t, os.Symlink(canary.File(), p))
				return Source{Kind: Layout, Dir: dir, Tag: "v1"}
			},
			wantErr: "not a regular file",
		},
		{
			name: "digest escaping the blobs dir",
			mutate: func(t *testing.T, dir string) Source {
				var idx map[string]any
				raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
				must(t, err)
				must(t, json.Unmarshal(raw, &idx))
				idx["manifests"].([]any)[0].(map[string]any)["digest"] = "sha256:../../../../" + strings.TrimPrefix(canary.Rel(), "../")
				raw, _ = json.Marshal(idx)
				must(t, os.WriteFile(filepath.Join(dir, "index.json"), raw, 0o644))
				return Source{Kind: Layout, Dir: dir, Tag: "v1"}
			},
			wantErr: "index.json",
		},
		{
			name: "manifest digest mismatch",
			mutate: func(t *testing.T, dir string) Source {
				p := filepath.Join(dir, "blobs", "sha256", manifest.Hex)
				raw, err := os.ReadFile(p)
				must(t, err)
				must(t, os.WriteFile(p, append(raw, ' '), 0o644))
				return Source{Kind: Layout, Dir: dir, Tag: "v1"}
			},
			wantErr: "tampered",
		},
		{
			name: "layer digest mismatch",
			mutate: func(t *testing.T, dir string) Source {
				p := filepath.Join(dir, "blobs", "sha256", layerDigest.Hex)
				raw, err := os.ReadFile(p)
				must(t, err)
				raw[len(raw)/2] ^= 0xff
				must(t, os.WriteFile(p, raw, 0o644))
				return Source{Kind: Layout, Dir: dir, Tag: "v1"}
			},
			wantErr: "tampered",
			lazy:    true,
		},
		{
			name: "digest option escaping",
			mutate: func(t *testing.T, dir string) Source {
				return Source{Kind: Layout, Dir: dir, Digest: "sha512:" + strings.Repeat("0", 128)}
			},
			wantErr: "only sha256",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeLayout(t, img, "v1", nil)
			src := tc.mutate(t, dir)
			got, _, err := OpenLayout(src, amd64)
			if tc.lazy && err == nil {
				err = readAll(t, got)
				if err != nil && !errors.Is(err, ErrDigestMismatch) {
					t.Errorf("not a digest mismatch: %v", err)
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v; want an error with %q", err, tc.wantErr)
			}
			canary.Check(t)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
