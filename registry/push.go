package registry

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/trace"
)

// Pushed is one reference written by Push.
type Pushed struct {
	// Ref is the reference as normalised (docker.io/library/… for short
	// names).
	Ref name.Reference
	// Digest is the manifest digest the reference now points to.
	Digest v1.Hash
}

// Push writes img to every reference in refs (tags or digests). For each
// registry, go-containerregistry uploads the blobs in parallel, skips those
// the registry has (HEAD) and mounts those it holds in another repository,
// and writes the manifest only once every blob is there: a failed push never
// leaves a tag naming missing blobs. Failed requests and uploads are retried
// (connection resets, 408, 429, 5xx) with r's backoff. Mirrors are for pulls
// only: a push always goes to the named registry.
func (r *Resolver) Push(ctx context.Context, img remote.Taggable, refs []string) ([]Pushed, error) {
	byRegistry := map[string]map[name.Reference]remote.Taggable{}
	var order []string
	var parsed []name.Reference
	for _, s := range refs {
		n, err := r.Parse(s)
		if err != nil {
			return nil, err
		}
		reg := n.Context().RegistryStr()
		if byRegistry[reg] == nil {
			byRegistry[reg] = map[name.Reference]remote.Taggable{}
			order = append(order, reg)
		}
		byRegistry[reg][n] = img
		parsed = append(parsed, n)
	}
	d, err := digestOf(img)
	if err != nil {
		return nil, fmt.Errorf("pushing: computing the manifest digest: %w", err)
	}
	// One registry at a time: an authentication failure then names the
	// registry that refused, and a second registry is not half-written
	// when the first one fails.
	for _, reg := range order {
		todo := byRegistry[reg]
		for n, t := range todo {
			todo[n] = r.mountable(t, n.Context().Registry)
		}
		wctx, span := trace.Start(ctx, "push "+reg)
		err := remote.MultiWrite(todo, r.Options(wctx)...)
		span.End()
		if err != nil {
			var first name.Reference
			for n := range todo {
				first = n
				break
			}
			what := first.String()
			if len(todo) > 1 {
				what = fmt.Sprintf("%d references to %s", len(todo), reg)
			}
			return nil, fmt.Errorf("pushing %s: %w", what, r.explain(ctx, first.Context().Registry, err))
		}
	}
	out := make([]Pushed, 0, len(parsed))
	for _, n := range parsed {
		out = append(out, Pushed{Ref: n, Digest: d})
	}
	return out, nil
}

func digestOf(t remote.Taggable) (v1.Hash, error) {
	if d, ok := t.(interface{ Digest() (v1.Hash, error) }); ok {
		return d.Digest()
	}
	raw, err := t.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	return h, err
}

// mountable returns t with the layers of images resolved earlier on reg
// marked as mountable from there: go-containerregistry then asks reg to
// link the blob from that repository (a cross-repository mount) instead of
// uploading it, which is what makes pushing a small image FROM a large base
// of the same registry fast.
func (r *Resolver) mountable(t remote.Taggable, reg name.Registry) remote.Taggable {
	img, isImage := t.(v1.Image)
	idx, isIndex := t.(v1.ImageIndex)
	if !isImage && !isIndex {
		return t
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	from := map[v1.Hash]name.Digest{}
	for h, src := range r.sources {
		if src.Context().RegistryStr() == reg.RegistryStr() {
			from[h] = src
		}
	}
	if len(from) == 0 {
		return t
	}
	if isIndex {
		// An image with its attestations: the image's layers mount the
		// same way.
		return &mountableIndex{idx: idx, from: from}
	}
	return &mountableImage{Image: img, from: from}
}

// mountableIndex is an index whose images' layers are mountable. (Not an
// embedded v1.ImageIndex: the field's name would hide the ImageIndex
// method.)
type mountableIndex struct {
	idx  v1.ImageIndex
	from map[v1.Hash]name.Digest
}

func (m *mountableIndex) MediaType() (types.MediaType, error)         { return m.idx.MediaType() }
func (m *mountableIndex) Digest() (v1.Hash, error)                    { return m.idx.Digest() }
func (m *mountableIndex) Size() (int64, error)                        { return m.idx.Size() }
func (m *mountableIndex) IndexManifest() (*v1.IndexManifest, error)   { return m.idx.IndexManifest() }
func (m *mountableIndex) RawManifest() ([]byte, error)                { return m.idx.RawManifest() }
func (m *mountableIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return m.idx.ImageIndex(h) }

func (m *mountableIndex) Image(h v1.Hash) (v1.Image, error) {
	img, err := m.idx.Image(h)
	if err != nil {
		return nil, err
	}
	return &mountableImage{Image: img, from: m.from}, nil
}

type mountableImage struct {
	v1.Image
	from map[v1.Hash]name.Digest
}

func (m *mountableImage) wrap(l v1.Layer) v1.Layer {
	d, err := l.Digest()
	if err != nil {
		return l
	}
	if src, ok := m.from[d]; ok {
		return &remote.MountableLayer{Layer: l, Reference: src}
	}
	return l
}

func (m *mountableImage) Layers() ([]v1.Layer, error) {
	ls, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = m.wrap(l)
	}
	return out, nil
}

func (m *mountableImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := m.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return m.wrap(l), nil
}

// AddSource records that the blob layer can be found in the repository of
// from, so that a later push to the same registry mounts it from there
// instead of uploading it (remote cache layers, which are never resolved
// as part of an image).
func (r *Resolver) AddSource(layer v1.Hash, from name.Digest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sources == nil {
		r.sources = map[v1.Hash]name.Digest{}
	}
	if _, ok := r.sources[layer]; !ok {
		r.sources[layer] = from
	}
}

var _ v1.ImageIndex = (*mountableIndex)(nil)
