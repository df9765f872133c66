package export

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestMultiPlatformIndex(t *testing.T) {
	amd := imageOf(t, gzLayer(t, file("a", "amd64")))
	arm := imageOf(t, gzLayer(t, file("a", "arm64")))
	attest := func(subject v1.Descriptor, names []string) ([]Attestation, error) {
		return []Attestation{{PredicateType: "p", Statement: []byte(`{"subject":"` + subject.Digest.String() + `"}`)}}, nil
	}
	for _, tt := range []struct {
		name   string
		oci    bool
		attest Attester
		mt     types.MediaType
		n      int
	}{
		{"oci", true, nil, types.OCIImageIndex, 2},
		{"docker media types", false, nil, types.DockerManifestList, 2},
		{"with attestations", true, attest, types.OCIImageIndex, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			imgs := []PlatformImage{
				{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Dir: "linux_amd64", Image: amd, Attest: tt.attest},
				{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}, Dir: "linux_arm64", Image: arm, Attest: tt.attest},
			}
			idx, err := MultiPlatformIndex(imgs, []string{"example.com/app:1"}, tt.oci)
			if err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if im.MediaType != tt.mt || len(im.Manifests) != tt.n {
				t.Fatalf("index %s with %d manifests, want %s with %d", im.MediaType, len(im.Manifests), tt.mt, tt.n)
			}
			// The images first, in the order given, each with its
			// platform; then each one's attestation manifest, naming it.
			for i, want := range []string{"linux/amd64", "linux/arm64"} {
				d := im.Manifests[i]
				if d.Platform == nil || d.Platform.String() != want {
					t.Errorf("manifest %d: platform %v, want %s", i, d.Platform, want)
				}
				if _, err := idx.Image(d.Digest); err != nil {
					t.Error(err)
				}
				if tt.n == 4 {
					a := im.Manifests[2+i]
					if a.Annotations[AnnotationReferenceDigest] != d.Digest.String() {
						t.Errorf("attestation %d is for %s, want %s", i, a.Annotations[AnnotationReferenceDigest], d.Digest)
					}
				}
			}
		})
	}
}

func TestMultiRootfsTar(t *testing.T) {
	imgs := []PlatformImage{
		{Dir: "linux_amd64", Image: imageOf(t, gzLayer(t, dir("d/", 0o755), file("d/f", "amd64"), hardlink("d/h", "d/f")))},
		{Dir: "linux_arm64", Image: imageOf(t, gzLayer(t, file("f", "arm64")))},
	}
	dest := filepath.Join(t.TempDir(), "out.tar")
	if err := WriteMulti(context.Background(), imgs, Output{Type: "tar", Dest: dest}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]string{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[hdr.Name] = string(b) + hdr.Linkname
	}
	for name, want := range map[string]string{
		"linux_amd64/d/f": "amd64",
		"linux_amd64/d/h": "linux_amd64/d/f",
		"linux_arm64/f":   "arm64",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q (all: %v)", name, got[name], want, got)
		}
	}
	if err := WriteMulti(context.Background(), imgs, Output{Type: "docker", Dest: dest}, nil); err == nil {
		t.Error("type=docker took several platforms")
	}
}
