package export

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

const testPredicate = "https://slsa.dev/provenance/v1"

// testAttester returns a statement naming the subject it was given, and
// records that subject.
func testAttester(seen *v1.Descriptor) Attester {
	return func(subject v1.Descriptor, names []string) ([]Attestation, error) {
		*seen = subject
		st := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"_","digest":{"sha256":%q}}],"predicateType":%q,"predicate":{}}`, subject.Digest.Hex, testPredicate)
		return []Attestation{{PredicateType: testPredicate, Statement: []byte(st)}}, nil
	}
}

// checkAttestedIndex checks BuildKit's attestation storage layout: the
// image first (its platform), then one attestation manifest for it
// (unknown/unknown, reference annotations) whose single layer is the
// in-toto statement about the image's manifest digest.
func checkAttestedIndex(t *testing.T, idx v1.ImageIndex, wantImage v1.Hash, oci bool) {
	t.Helper()
	// (validate.Index would refuse the attestation manifest: it counts
	// only layers of image media types against the config's diffIDs. The
	// image is validated, the attestation manifest checked field by field.)
	child, err := idx.Image(wantImage)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(child); err != nil {
		t.Fatalf("the image in the index does not validate: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	wantIdx, wantMan := types.OCIImageIndex, types.OCIManifestSchema1
	if !oci {
		wantIdx, wantMan = types.DockerManifestList, types.DockerManifestSchema2
	}
	if mt, _ := idx.MediaType(); mt != wantIdx {
		t.Errorf("index media type %s, want %s", mt, wantIdx)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index has %d manifests, want the image and its attestation manifest", len(im.Manifests))
	}
	img, att := im.Manifests[0], im.Manifests[1]
	if img.Digest != wantImage || img.Platform == nil || img.Platform.OS != "linux" || img.Platform.Architecture != "amd64" {
		t.Errorf("first entry %+v, want the image %s for linux/amd64", img, wantImage)
	}
	if att.MediaType != wantMan || att.Platform == nil || att.Platform.OS != "unknown" || att.Platform.Architecture != "unknown" {
		t.Errorf("attestation entry %+v: want %s for unknown/unknown", att, wantMan)
	}
	if att.Annotations[AnnotationReferenceType] != AttestationManifest || att.Annotations[AnnotationReferenceDigest] != wantImage.String() {
		t.Errorf("attestation entry annotations %v", att.Annotations)
	}
	ai, err := idx.Image(att.Digest)
	if err != nil {
		t.Fatal(err)
	}
	am, err := ai.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(am.Layers) != 1 || am.Layers[0].MediaType != MediaTypeInToto {
		t.Fatalf("attestation layers %+v, want one %s", am.Layers, MediaTypeInToto)
	}
	if oci && am.Layers[0].Annotations[AnnotationPredicateType] != testPredicate {
		t.Errorf("layer annotations %v", am.Layers[0].Annotations)
	}
	cf, err := ai.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "unknown" || cf.Architecture != "unknown" || len(cf.RootFS.DiffIDs) != 1 || cf.RootFS.DiffIDs[0] != am.Layers[0].Digest {
		t.Errorf("attestation config %+v", cf)
	}
	l, err := ai.LayerByDigest(am.Layers[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var st struct {
		Subject []struct {
			Digest map[string]string
		}
	}
	b, _ := io.ReadAll(rc)
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Subject) != 1 || st.Subject[0].Digest["sha256"] != wantImage.Hex {
		t.Errorf("statement subject %+v, want %s", st.Subject, wantImage)
	}
}

// TestAttestedOutputs writes an image with an attestation to each output
// that can hold one and reads it back.
func TestAttestedOutputs(t *testing.T) {
	ctx := context.Background()
	img := ociImage(t, types.OCILayer)
	imgDigest, _ := img.Digest()
	docker, err := DockerMediaTypes(img)
	if err != nil {
		t.Fatal(err)
	}
	dockerDigest, _ := docker.Digest()

	tests := []struct {
		name      string
		spec      string
		oci       bool
		wantImage v1.Hash
		read      func(t *testing.T, out Output, p *fakePusher) v1.ImageIndex
	}{
		{"oci archive", "type=oci,dest=DIR/a.tar", true, imgDigest, func(t *testing.T, out Output, _ *fakePusher) v1.ImageIndex {
			return indexInLayout(t, untar(t, out.Dest))
		}},
		{"oci layout", "type=oci,tar=false,dest=DIR/layout", true, imgDigest, func(t *testing.T, out Output, _ *fakePusher) v1.ImageIndex {
			return indexInLayout(t, out.Dest)
		}},
		{"registry", "type=registry", true, imgDigest, func(t *testing.T, _ Output, p *fakePusher) v1.ImageIndex { return p.idx }},
		// The subject is the digest the registry serves: the Docker
		// manifest, not the OCI one it was made from.
		{"registry, docker media types", "type=registry,oci-mediatypes=false", false, dockerDigest, func(t *testing.T, _ Output, p *fakePusher) v1.ImageIndex { return p.idx }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs, err := ParseOutputs([]string{strings.ReplaceAll(tt.spec, "DIR", t.TempDir())})
			if err != nil {
				t.Fatal(err)
			}
			out := outs[0]
			p := &fakePusher{}
			out.Pusher = p
			var subject v1.Descriptor
			out.Attest = testAttester(&subject)
			if err := Write(ctx, img, out, []string{"r.example/app:1"}); err != nil {
				t.Fatal(err)
			}
			if subject.Digest != tt.wantImage {
				t.Errorf("attester saw subject %s, want %s", subject.Digest, tt.wantImage)
			}
			idx := tt.read(t, out, p)
			if idx == nil {
				t.Fatal("no index written")
			}
			checkAttestedIndex(t, idx, tt.wantImage, tt.oci)
		})
	}

	for _, typ := range []string{"docker", "local", "tar"} {
		t.Run("refused by type="+typ, func(t *testing.T) {
			outs, err := ParseOutputs([]string{"type=" + typ + ",dest=" + filepath.Join(t.TempDir(), "x")})
			if err != nil {
				t.Fatal(err)
			}
			var subject v1.Descriptor
			outs[0].Attest = testAttester(&subject)
			if err := Write(ctx, img, outs[0], nil); err == nil {
				t.Errorf("type=%s took an attestation", typ)
			}
		})
	}
}

// indexInLayout returns the image index the layout's index.json names.
func indexInLayout(t *testing.T, dir string) v1.ImageIndex {
	t.Helper()
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsIndex() {
		t.Fatalf("index.json entries %+v, want one image index", im.Manifests)
	}
	if im.Manifests[0].Annotations[annotationImageName] != "r.example/app:1" {
		t.Errorf("index.json entry annotations %v", im.Manifests[0].Annotations)
	}
	idx, err := root.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}
