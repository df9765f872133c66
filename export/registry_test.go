package export

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fakePusher records what it was asked to push.
type fakePusher struct {
	img  v1.Image
	idx  v1.ImageIndex
	refs []string
}

func (p *fakePusher) Push(_ context.Context, a Artifact, refs []string) error {
	switch a := a.(type) {
	case v1.Image:
		p.img = a
	case v1.ImageIndex:
		p.idx = a
	}
	p.refs = refs
	return nil
}

// ociImage is a two-layer OCI image whose top layer has media type mt.
func ociImage(t *testing.T, mt types.MediaType) v1.Image {
	t.Helper()
	gz, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes(t, []ent{file("a", "a")}))), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	var top v1.Layer
	opener := func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes(t, []ent{file("b", "b")}))), nil
	}
	switch mt {
	case types.OCILayerZStd:
		top, err = tarball.LayerFromOpener(opener, tarball.WithCompression("zstd"), tarball.WithMediaType(types.OCILayerZStd))
	case types.OCILayer:
		top, err = tarball.LayerFromOpener(opener, tarball.WithMediaType(types.OCILayer))
	default:
		top = static.NewLayer(tarBytes(t, []ent{file("b", "b")}), mt)
	}
	if err != nil {
		t.Fatal(err)
	}
	img := imageOf(t, gz, top)
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	// mutate describes these layers with empty, non-nil annotations that
	// the encoded manifest drops; re-encode so the fixture validates.
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Layers {
		m.Layers[i].Annotations = nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := partial.CompressedToImage(&remanifested{img: img, manifest: raw, mt: types.OCIManifestSchema1})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDockerMediaTypesDropsAnnotations(t *testing.T) {
	img := mutate.Annotations(ociImage(t, types.OCILayer), map[string]string{"org.opencontainers.image.base.name": "busybox"}).(v1.Image)
	d, err := DockerMediaTypes(img)
	if err != nil {
		t.Fatal(err)
	}
	m, err := d.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Annotations) > 0 {
		t.Errorf("a schema 2 manifest kept annotations %v", m.Annotations)
	}
	if err := validate.Image(d); err != nil {
		t.Error(err)
	}
}

func TestRegistryOutput(t *testing.T) {
	tests := []struct {
		name       string
		spec       string
		names      []string
		top        types.MediaType
		wantRefs   []string
		wantTypes  []types.MediaType // manifest, config, layers
		wantErr    string
		useDefault bool
	}{
		{
			name: "OCI by default", spec: "type=registry", names: []string{"r.example/a:1", "r.example/a:latest"}, top: types.OCIUncompressedLayer,
			wantRefs:  []string{"r.example/a:1", "r.example/a:latest"},
			wantTypes: []types.MediaType{types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, types.OCIUncompressedLayer},
		},
		{
			name: "Docker schema 2", spec: "type=registry,oci-mediatypes=false", names: []string{"r.example/a:1"}, top: types.OCILayer,
			wantRefs:  []string{"r.example/a:1"},
			wantTypes: []types.MediaType{types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer, types.DockerLayer},
		},
		{
			name: "Docker schema 2, uncompressed", spec: "type=registry,oci-mediatypes=false", names: []string{"r.example/a:1"}, top: types.OCIUncompressedLayer,
			wantRefs:  []string{"r.example/a:1"},
			wantTypes: []types.MediaType{types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer, types.DockerUncompressedLayer},
		},
		{
			name: "buildx's image spelling, name= replaces -t", spec: `type=image,push=true,"name=r.example/b:1,r.example/b:2"`, names: []string{"r.example/a:1"}, top: types.OCILayer,
			wantRefs:  []string{"r.example/b:1", "r.example/b:2"},
			wantTypes: []types.MediaType{types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, types.OCILayer},
		},
		{
			name: "the command's pusher", spec: "type=registry", names: []string{"r.example/a:1"}, top: types.OCILayer, useDefault: true,
			wantRefs:  []string{"r.example/a:1"},
			wantTypes: []types.MediaType{types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, types.OCILayer},
		},
		{name: "zstd has no Docker type", spec: "type=registry,oci-mediatypes=false", names: []string{"r.example/a:1"}, top: types.OCILayerZStd, wantErr: "zstd"},
		{name: "no name", spec: "type=registry", top: types.OCILayer, wantErr: "no name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs, err := ParseOutputs([]string{tt.spec})
			if err != nil {
				t.Fatal(err)
			}
			p := &fakePusher{}
			if tt.useDefault {
				DefaultPusher = p
				t.Cleanup(func() { DefaultPusher = nil })
			} else {
				outs[0].Pusher = p
			}
			src := ociImage(t, tt.top)
			err = Write(context.Background(), src, outs[0], tt.names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.refs, tt.wantRefs) {
				t.Errorf("pushed to %v, want %v", p.refs, tt.wantRefs)
			}
			// (static's uncompressed layers do not read back through
			// validate's gunzip; their media types are checked below.)
			if tt.top != types.OCIUncompressedLayer {
				if err := validate.Image(p.img); err != nil {
					t.Fatalf("pushed image does not validate: %v", err)
				}
			}
			m, err := p.img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			got := []types.MediaType{m.MediaType, m.Config.MediaType}
			for _, l := range m.Layers {
				got = append(got, l.MediaType)
			}
			if !reflect.DeepEqual(got, tt.wantTypes) {
				t.Errorf("media types %v, want %v", got, tt.wantTypes)
			}
			// Same blobs: only the manifest may change.
			sm, _ := src.Manifest()
			if m.Config.Digest != sm.Config.Digest {
				t.Errorf("config changed: %s, was %s", m.Config.Digest, sm.Config.Digest)
			}
			for i := range m.Layers {
				if m.Layers[i].Digest != sm.Layers[i].Digest {
					t.Errorf("layer %d changed: %s, was %s", i, m.Layers[i].Digest, sm.Layers[i].Digest)
				}
			}
		})
	}
}
