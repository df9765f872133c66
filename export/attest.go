package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BuildKit's attestation storage (docs/attestations/attestation-storage.md
// in moby/buildkit): attestations travel in an image manifest of their own,
// beside the image in an index, marked so that runtimes never pick it.
const (
	// MediaTypeInToto is the media type of an attestation layer.
	MediaTypeInToto types.MediaType = "application/vnd.in-toto+json"
	// AnnotationReferenceType marks an index entry as an attestation
	// manifest (value AttestationManifest).
	AnnotationReferenceType = "vnd.docker.reference.type"
	// AnnotationReferenceDigest names the manifest an attestation manifest
	// is about.
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	// AttestationManifest is AnnotationReferenceType's value.
	AttestationManifest = "attestation-manifest"
	// AnnotationPredicateType, on an attestation layer, repeats the
	// statement's predicateType so a reader can pick a layer unread.
	AnnotationPredicateType = "in-toto.io/predicate-type"
)

// Artifact is what an output writes: an image, or an index holding the
// image and its attestations. Both v1.Image and v1.ImageIndex are one.
type Artifact interface {
	MediaType() (types.MediaType, error)
	Digest() (v1.Hash, error)
	Size() (int64, error)
	RawManifest() ([]byte, error)
}

// Attestation is one in-toto statement to attach to an image.
type Attestation struct {
	PredicateType string
	Statement     []byte
}

// Attester returns the attestations of the image an output is about to
// write, given the descriptor of its final manifest (after any media type
// change, so the statement's subject is the digest a registry serves) and
// the names it is written under.
type Attester func(subject v1.Descriptor, names []string) ([]Attestation, error)

// WithAttestations returns an index holding img (platform linux/amd64)
// and, after it, one attestation manifest with atts as its layers
// (platform unknown/unknown, annotated with img's digest), laid out as
// BuildKit lays them out. With oci false the index and the attestation
// manifest carry Docker media types, as BuildKit's with
// oci-mediatypes=false.
func WithAttestations(img v1.Image, atts []Attestation, oci bool) (v1.ImageIndex, error) {
	if len(atts) == 0 {
		return nil, errors.New("attaching attestations: none given")
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return nil, fmt.Errorf("describing the image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	imgDesc := v1.Descriptor{MediaType: desc.MediaType, Size: desc.Size, Digest: desc.Digest}
	if cf.OS != "" {
		imgDesc.Platform = &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	}

	att, err := attestationImage(atts, oci)
	if err != nil {
		return nil, err
	}
	attDesc, err := partial.Descriptor(att)
	if err != nil {
		return nil, fmt.Errorf("describing the attestation manifest: %w", err)
	}
	attDesc.ArtifactType = "" // BuildKit sets none; readers go by the annotations
	attDesc.Platform = &v1.Platform{OS: "unknown", Architecture: "unknown"}
	attDesc.Annotations = map[string]string{
		AnnotationReferenceDigest: desc.Digest.String(),
		AnnotationReferenceType:   AttestationManifest,
	}

	mt := types.OCIImageIndex
	if !oci {
		mt = types.DockerManifestList
	}
	raw, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     mt,
		Manifests:     []v1.Descriptor{imgDesc, *attDesc},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the index: %w", err)
	}
	return &attestedIndex{raw: raw, mt: mt, images: map[v1.Hash]v1.Image{desc.Digest: img, attDesc.Digest: att}}, nil
}

// attestationImage is the attestation manifest: a config that only says
// unknown/unknown, and each statement as an uncompressed layer whose
// diffID is its digest.
func attestationImage(atts []Attestation, oci bool) (v1.Image, error) {
	layers := make([]v1.Descriptor, 0, len(atts))
	blobs := map[v1.Hash][]byte{}
	var diffIDs []v1.Hash
	for _, a := range atts {
		h := sha256Hash(a.Statement)
		layers = append(layers, v1.Descriptor{
			MediaType:   MediaTypeInToto,
			Size:        int64(len(a.Statement)),
			Digest:      h,
			Annotations: map[string]string{AnnotationPredicateType: a.PredicateType},
		})
		blobs[h] = a.Statement
		diffIDs = append(diffIDs, h)
	}
	cfg, err := json.Marshal(struct {
		Architecture string    `json:"architecture"`
		OS           string    `json:"os"`
		Config       struct{}  `json:"config"`
		RootFS       v1.RootFS `json:"rootfs"`
	}{Architecture: "unknown", OS: "unknown", RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
	if err != nil {
		return nil, fmt.Errorf("encoding the attestation config: %w", err)
	}
	mt, cmt := types.OCIManifestSchema1, types.OCIConfigJSON
	if !oci {
		mt, cmt = types.DockerManifestSchema2, types.DockerConfigJSON
		// Annotations have no place in a schema 2 manifest.
		for i := range layers {
			layers[i].Annotations = nil
		}
	}
	raw, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     mt,
		Config:        v1.Descriptor{MediaType: cmt, Size: int64(len(cfg)), Digest: sha256Hash(cfg)},
		Layers:        layers,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the attestation manifest: %w", err)
	}
	return partial.CompressedToImage(&rawImage{manifest: raw, config: cfg, mt: mt, cmt: cmt, blobs: blobs})
}

func sha256Hash(b []byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(b))}
}

// rawImage is an image held as bytes: a manifest, a config and small
// layers, for partial.CompressedToImage.
type rawImage struct {
	manifest, config []byte
	mt, cmt          types.MediaType // of the manifest, of the config
	blobs            map[v1.Hash][]byte
}

func (r *rawImage) RawConfigFile() ([]byte, error)      { return r.config, nil }
func (r *rawImage) RawManifest() ([]byte, error)        { return r.manifest, nil }
func (r *rawImage) MediaType() (types.MediaType, error) { return r.mt, nil }

func (r *rawImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == sha256Hash(r.config) {
		return &blobLayer{data: r.config, h: h, mt: r.cmt}, nil
	}
	b, ok := r.blobs[h]
	if !ok {
		return nil, fmt.Errorf("no blob %s in the attestation manifest", h)
	}
	return &blobLayer{data: b, h: h, mt: MediaTypeInToto}, nil
}

type blobLayer struct {
	data []byte
	h    v1.Hash
	mt   types.MediaType
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.h, nil }
func (l *blobLayer) Size() (int64, error)                { return int64(len(l.data)), nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.data)), nil
}
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l *blobLayer) DiffID() (v1.Hash, error)             { return l.h, nil }

// attestedIndex is the index WithAttestations builds.
type attestedIndex struct {
	raw    []byte
	mt     types.MediaType
	images map[v1.Hash]v1.Image
}

func (x *attestedIndex) MediaType() (types.MediaType, error) { return x.mt, nil }
func (x *attestedIndex) Digest() (v1.Hash, error)            { return sha256Hash(x.raw), nil }
func (x *attestedIndex) Size() (int64, error)                { return int64(len(x.raw)), nil }
func (x *attestedIndex) RawManifest() ([]byte, error)        { return x.raw, nil }

func (x *attestedIndex) IndexManifest() (*v1.IndexManifest, error) {
	var m v1.IndexManifest
	if err := json.Unmarshal(x.raw, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (x *attestedIndex) Image(h v1.Hash) (v1.Image, error) {
	if img, ok := x.images[h]; ok {
		return img, nil
	}
	return nil, fmt.Errorf("no image %s in the index", h)
}

func (x *attestedIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("no index %s in the index", h)
}

// Attach applies attest to the image an output writes, as an index, or
// returns img itself when attest is nil.
func Attach(img v1.Image, attest Attester, names []string, oci bool) (Artifact, error) {
	if attest == nil {
		return img, nil
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return nil, fmt.Errorf("describing the image: %w", err)
	}
	atts, err := attest(*desc, names)
	if err != nil {
		return nil, err
	}
	if len(atts) == 0 {
		return img, nil
	}
	return WithAttestations(img, atts, oci)
}
