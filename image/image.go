// Package image assembles a built image — a config and stored layers — into
// a go-containerregistry v1.Image whose layers are the stored blobs, so
// exporting never recompresses anything.
package image

import (
	"bytes"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/cache"
)

// Store is the part of the store an image reads its layers from.
type Store interface {
	Layer(info cache.LayerInfo, mt types.MediaType) v1.Layer
}

// New returns the image with the given raw config and layers (bottom
// first). oci selects OCI media types; otherwise Docker schema 2.
func New(store Store, rawConfig []byte, layers []cache.LayerInfo, oci bool) (v1.Image, error) {
	im := &image{config: rawConfig, oci: oci, byDigest: map[v1.Hash]v1.Layer{}}
	m := v1.Manifest{SchemaVersion: 2}
	if oci {
		m.MediaType = types.OCIManifestSchema1
		m.Config.MediaType = types.OCIConfigJSON
	} else {
		m.MediaType = types.DockerManifestSchema2
		m.Config.MediaType = types.DockerConfigJSON
	}
	cfgHash, cfgSize, err := v1.SHA256(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("hashing config: %w", err)
	}
	m.Config.Digest, m.Config.Size = cfgHash, cfgSize
	for _, info := range layers {
		mt := LayerMediaType(info.MediaType, oci)
		l := store.Layer(info, mt)
		im.byDigest[info.Digest] = l
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: info.Size, Digest: info.Digest})
	}
	if im.manifest, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return partial.CompressedToImage(im)
}

// LayerMediaType maps a stored blob's media type to the OCI or Docker
// spelling of the same compression. zstd has no Docker spelling.
func LayerMediaType(stored types.MediaType, oci bool) types.MediaType {
	switch stored {
	case types.DockerUncompressedLayer, types.OCIUncompressedLayer:
		if oci {
			return types.OCIUncompressedLayer
		}
		return types.DockerUncompressedLayer
	case types.OCILayerZStd:
		return types.OCILayerZStd
	default:
		if oci {
			return types.OCILayer
		}
		return types.DockerLayer
	}
}

type image struct {
	config, manifest []byte
	oci              bool
	byDigest         map[v1.Hash]v1.Layer
}

func (i *image) RawConfigFile() ([]byte, error) { return i.config, nil }
func (i *image) RawManifest() ([]byte, error)   { return i.manifest, nil }
func (i *image) MediaType() (types.MediaType, error) {
	if i.oci {
		return types.OCIManifestSchema1, nil
	}
	return types.DockerManifestSchema2, nil
}

func (i *image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.byDigest[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s is not part of this image", h)
}
