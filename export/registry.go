package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Pusher writes an image, or an index holding an image and its
// attestations (a v1.Image or a v1.ImageIndex), to registries. export does
// not configure registries (credentials, TLS, mirrors): the command does,
// and hands the result in.
type Pusher interface {
	Push(ctx context.Context, a Artifact, refs []string) error
}

// DefaultPusher pushes -o type=registry outputs that carry no Pusher of
// their own. cmd/kiln sets it once its registry flags are read, before any
// output is written.
var DefaultPusher Pusher

// Registry pushes img to every name, like buildx -o type=registry. With
// oci false the manifest and config carry Docker schema 2 media types
// (oci-mediatypes=false), for registries and tools that predate OCI. A
// non-nil attest pushes an index of img and its attestations instead.
func Registry(ctx context.Context, p Pusher, img v1.Image, names []string, oci bool, attest Attester) error {
	return pushOutput(ctx, p, img, names, oci, attest, Output{})
}

// pushOutput is Registry with the annotations an output asks for.
func pushOutput(ctx context.Context, p Pusher, img v1.Image, names []string, oci bool, attest Attester, out Output) error {
	if len(names) == 0 {
		return errors.New("pushing: no name to push to (give -t NAME or name=NAME)")
	}
	if p == nil {
		return errors.New("pushing: no registry configuration was given to the exporter")
	}
	if !oci {
		var err error
		if img, err = DockerMediaTypes(img); err != nil {
			return err
		}
	}
	a, err := annotate(img, out, func(img v1.Image) (Artifact, error) { return Attach(img, attest, names, oci) })
	if err != nil {
		return err
	}
	return p.Push(ctx, a, names)
}

// DockerMediaTypes returns img with Docker schema 2 media types in its
// manifest: the same config and layer bytes, so only the manifest digest
// changes. Annotations have no place in a schema 2 manifest and are
// dropped; zstd layers have no Docker media type and are refused.
func DockerMediaTypes(img v1.Image) (v1.Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	if m.MediaType == types.DockerManifestSchema2 {
		return img, nil
	}
	dm := *m
	dm.MediaType = types.DockerManifestSchema2
	dm.Annotations = nil
	dm.Subject = nil
	dm.Config.MediaType = types.DockerConfigJSON
	dm.Config.Annotations = nil
	dm.Layers = make([]v1.Descriptor, len(m.Layers))
	layerTypes := map[v1.Hash]types.MediaType{}
	for i, l := range m.Layers {
		mt, err := dockerLayerType(l.MediaType)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		dm.Layers[i] = v1.Descriptor{MediaType: mt, Size: l.Size, Digest: l.Digest, URLs: l.URLs}
		layerTypes[l.Digest] = mt
	}
	raw, err := json.Marshal(dm)
	if err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	return partial.CompressedToImage(&remanifested{img: img, manifest: raw, mt: types.DockerManifestSchema2, layerTypes: layerTypes})
}

func dockerLayerType(mt types.MediaType) (types.MediaType, error) {
	switch mt {
	case types.OCILayer, types.DockerLayer:
		return types.DockerLayer, nil
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return types.DockerUncompressedLayer, nil
	case types.OCIRestrictedLayer, types.DockerForeignLayer:
		return types.DockerForeignLayer, nil
	case types.OCILayerZStd:
		return "", errors.New("zstd layers have no Docker schema 2 media type; keep oci-mediatypes=true or use gzip")
	default:
		return "", fmt.Errorf("no Docker schema 2 media type for %s", mt)
	}
}

// remanifested is an image with a rewritten manifest over the original's
// config and layer blobs.
type remanifested struct {
	img        v1.Image
	manifest   []byte
	mt         types.MediaType
	layerTypes map[v1.Hash]types.MediaType
}

func (d *remanifested) RawConfigFile() ([]byte, error)      { return d.img.RawConfigFile() }
func (d *remanifested) RawManifest() ([]byte, error)        { return d.manifest, nil }
func (d *remanifested) MediaType() (types.MediaType, error) { return d.mt, nil }

func (d *remanifested) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	l, err := d.img.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	mt, ok := d.layerTypes[h]
	if !ok {
		return l, nil // the config
	}
	return &retypedLayer{Layer: l, mt: mt}, nil
}

// retypedLayer reports the media type the new manifest gives the layer, so
// that validators comparing layer and manifest agree.
type retypedLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *retypedLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
