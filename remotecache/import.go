package remotecache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/registry"
)

// Source is one --cache-from.
type Source struct {
	// Type is "registry" (Ref) or "local" (Dir).
	Type string
	Ref  string
	Dir  string
}

func (s Source) String() string {
	if s.Type == "local" {
		return "type=local,src=" + s.Dir
	}
	return "type=registry,ref=" + s.Ref
}

// Records are the merged step records of the imported sources. It is the
// planner's RemoteRecords: every layer it hands out is lazy.
type Records struct {
	m      map[string]imported
	mounts map[string]Mount
}

// CacheMountLayers returns the imported contents of cache mount id as
// lazy layers, to apply in order.
func (r *Records) CacheMountLayers(id string) ([]cache.LayerInfo, bool) {
	if r == nil {
		return nil, false
	}
	m, ok := r.mounts[id]
	return m.Layers, ok
}

// Mount returns the imported cache mount id.
func (r *Records) Mount(id string) (Mount, bool) {
	if r == nil {
		return Mount{}, false
	}
	m, ok := r.mounts[id]
	return m, ok
}

// source is what one cache source holds.
type source struct {
	steps  map[string]imported
	mounts map[string]Mount
	// mountsErr says why the source's cache mounts are not used.
	mountsErr error
}

type imported struct {
	rec   cache.StepRecord
	layer cache.LayerInfo
}

// Step returns the imported record of key.
func (r *Records) Step(key string) (cache.StepRecord, cache.LayerInfo, bool) {
	if r == nil {
		return cache.StepRecord{}, cache.LayerInfo{}, false
	}
	e, ok := r.m[key]
	return e.rec, e.layer, ok
}

// Len is the number of imported records.
func (r *Records) Len() int {
	if r == nil {
		return 0
	}
	return len(r.m)
}

// Import reads the records of every source, eagerly (they are small); the
// layers they name stay where they are until a step needs them. A key
// found in several sources keeps the first source's record. A source that
// is missing, unreachable, refused, corrupt or of another format is told
// to warn and skipped: a cache can make a build faster, never fail it.
func Import(ctx context.Context, res *registry.Resolver, sources []Source, warn func(string)) *Records {
	out := &Records{m: map[string]imported{}, mounts: map[string]Mount{}}
	for _, s := range sources {
		var (
			m   *source
			err error
		)
		switch s.Type {
		case "local":
			m, err = importLocal(s.Dir)
		default:
			m, err = importRegistry(ctx, res, s.Ref)
		}
		if err != nil {
			if ctx.Err() != nil {
				return out
			}
			warn(fmt.Sprintf("cache source %s is not used: %v", s, err))
			continue
		}
		for k, v := range m.steps {
			if _, ok := out.m[k]; !ok {
				out.m[k] = v
			}
		}
		if m.mountsErr != nil {
			warn(fmt.Sprintf("the cache mounts of cache source %s are not used (steps that use them start with empty ones): %v", s, m.mountsErr))
		}
		for id, v := range m.mounts {
			if _, ok := out.mounts[id]; !ok {
				out.mounts[id] = v
			}
		}
	}
	return out
}

// importRegistry reads a cache manifest, or an image with inline cache.
func importRegistry(ctx context.Context, res *registry.Resolver, ref string) (*source, error) {
	n, err := res.Parse(ref)
	if err != nil {
		return nil, err
	}
	opts := res.Options(ctx)
	// One puller for the whole source: the registry is pinged (and a
	// token fetched) once, not again before each layer or cache mount
	// that a step that runs needs — round trips on the critical path.
	if p, err := remote.NewPuller(opts...); err == nil {
		opts = append(opts, remote.Reuse(p))
	}
	desc, err := remote.Get(n, opts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("fetching %s: %w (log in with kiln login %s, or docker login: kiln reads the same credentials)", n, err, n.Context().RegistryStr())
		}
		return nil, fmt.Errorf("fetching %s: %w", n, err)
	}
	if desc.MediaType.IsIndex() {
		// A multi-platform image holds an inline cache per platform
		// (their keys differ): all of them are imported.
		if all, err := platformImages(desc); err == nil && len(all) > 1 {
			return importPlatforms(ctx, res, n, all)
		}
		// An image pushed with provenance is an index: its inline cache
		// is in the image manifest's config, beside the attestation.
		if desc, err = imageOfIndex(n, desc, opts); err != nil {
			return nil, fmt.Errorf("%s is an image index with no image of kiln's platform, not a kiln cache (push one with --cache-to type=registry,ref=%s): %w", n, ref, err)
		}
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("parsing the manifest of %s: %w", n, err)
	}
	repo := n.Context()
	blob := func(d v1.Descriptor) ([]byte, error) {
		if d.Size < 0 || d.Size > maxRecordsSize {
			return nil, fmt.Errorf("its records blob declares %d bytes, more than kiln reads (%d)", d.Size, maxRecordsSize)
		}
		l, err := remote.Layer(repo.Digest(d.Digest.String()), opts...)
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return readVerified(rc, d)
	}
	var recs []byte
	switch {
	case m.ArtifactType == ArtifactType || m.Config.MediaType == RecordsMediaType:
		if recs, err = blob(m.Config); err != nil {
			return nil, fmt.Errorf("fetching the records of %s: %w", n, err)
		}
	case m.Config.MediaType == types.OCIConfigJSON || m.Config.MediaType == types.DockerConfigJSON:
		cfg, err := blob(m.Config)
		if err != nil {
			return nil, fmt.Errorf("fetching the config of %s: %w", n, err)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(cfg, &top); err != nil {
			return nil, fmt.Errorf("decoding the config of %s: %w", n, err)
		}
		raw, ok := top[InlineKey]
		if !ok {
			return nil, fmt.Errorf("image %s carries no kiln cache (build it with --cache-to type=inline)", n)
		}
		recs = raw
	default:
		return nil, fmt.Errorf("%s is not a kiln cache (artifactType %q, config %s)", n, m.ArtifactType, m.Config.MediaType)
	}
	at := repo.Digest(desc.Digest.String())
	return describe(recs, m, func(d v1.Hash) func() (io.ReadCloser, error) {
		// The layer is resolved at first read: making it talks to the
		// registry (authentication), which a hit never needs.
		return func() (io.ReadCloser, error) {
			l, err := remote.Layer(repo.Digest(d.String()), opts...)
			if err != nil {
				return nil, err
			}
			return l.Compressed()
		}
	}, func(d v1.Hash) { res.AddSource(d, at) })
}

// importLocal reads the cache named by DIR/index.json.
func importLocal(dir string) (*source, error) {
	data, err := readLimited(filepath.Join(dir, "index.json"), 4<<20)
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(dir, "index.json"), err)
	}
	var desc *v1.Descriptor
	for i := range idx.Manifests {
		if idx.Manifests[i].ArtifactType == ArtifactType {
			desc = &idx.Manifests[i]
		}
	}
	if desc == nil {
		return nil, fmt.Errorf("%s names no kiln cache (artifactType %s)", filepath.Join(dir, "index.json"), ArtifactType)
	}
	blob := func(d v1.Descriptor) ([]byte, error) {
		if d.Size < 0 || d.Size > maxRecordsSize {
			return nil, fmt.Errorf("blob %s declares %d bytes, more than kiln reads", d.Digest, d.Size)
		}
		f, err := openBlob(dir, d.Digest)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readVerified(f, d)
	}
	raw, err := blob(*desc)
	if err != nil {
		return nil, fmt.Errorf("reading the cache manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing the cache manifest: %w", err)
	}
	if m.ArtifactType != ArtifactType && m.Config.MediaType != RecordsMediaType {
		return nil, fmt.Errorf("the manifest %s names is not a kiln cache", desc.Digest)
	}
	recs, err := blob(m.Config)
	if err != nil {
		return nil, fmt.Errorf("reading the cache records: %w", err)
	}
	return describe(recs, m, func(d v1.Hash) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return openBlob(dir, d) }
	}, func(v1.Hash) {})
}

func openBlob(dir string, d v1.Hash) (*os.File, error) {
	if _, err := parseSHA256(d.String()); err != nil {
		return nil, err
	}
	return os.Open(filepath.Join(dir, "blobs", "sha256", d.Hex))
}

// describe decodes records and gives each layer a lazy v1.Layer. A record
// naming a blob its manifest does not list makes the source corrupt: the
// manifest is what keeps the blob in the registry, and what a mount names.
func describe(recs []byte, m *v1.Manifest, open func(v1.Hash) func() (io.ReadCloser, error), found func(v1.Hash)) (*source, error) {
	decoded, err := decodeRecords(recs)
	if err != nil {
		return nil, err
	}
	listed := map[v1.Hash]bool{}
	for _, l := range m.Layers {
		listed[l.Digest] = true
	}
	out := make(map[string]imported, len(decoded))
	for k, r := range decoded {
		e := imported{rec: r.rec}
		if !r.rec.Empty {
			if !listed[r.digest] {
				return nil, fmt.Errorf("record %s names layer %s, which the manifest does not list", k, r.digest)
			}
			mt := r.mediaType
			if mt == "" {
				mt = types.OCILayer
			}
			cl := &lazyBlob{digest: r.digest, size: r.size, mt: mt, open: open(r.digest)}
			l, err := partial.CompressedToLayer(cl)
			if err != nil {
				return nil, err
			}
			e.layer = cache.LayerInfo{DiffID: r.rec.DiffID, Digest: r.digest, Size: r.size, MediaType: mt,
				Remote: &describedLayer{Layer: l, diffID: r.rec.DiffID}}
			found(r.digest)
		}
		out[k] = e
	}
	src := &source{steps: out}
	src.mounts, src.mountsErr = describeMounts(recs, listed, open, found)
	return src, nil
}

// describeMounts gives the layers of each cache mount of recs lazy
// v1.Layers, as describe does for step records.
func describeMounts(recs []byte, listed map[v1.Hash]bool, open func(v1.Hash) func() (io.ReadCloser, error), found func(v1.Hash)) (map[string]Mount, error) {
	decoded, err := decodeMounts(recs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Mount, len(decoded))
	for id, d := range decoded {
		m := Mount{ID: id, Created: d.created}
		for _, l := range d.layers {
			if !listed[l.digest] {
				return nil, fmt.Errorf("cache mount %q names layer %s, which the manifest does not list", id, l.digest)
			}
			cl, err := partial.CompressedToLayer(&lazyBlob{digest: l.digest, size: l.size, mt: l.mediaType, open: open(l.digest)})
			if err != nil {
				return nil, err
			}
			m.Layers = append(m.Layers, cache.LayerInfo{DiffID: l.diffID, Digest: l.digest, Size: l.size, MediaType: l.mediaType,
				Remote: &describedLayer{Layer: cl, diffID: l.diffID}})
		}
		for _, l := range d.layers {
			found(l.digest)
		}
		out[id] = m
	}
	return out, nil
}

// lazyBlob is a compressed layer known by its descriptor, opened when read.
type lazyBlob struct {
	digest v1.Hash
	size   int64
	mt     types.MediaType
	open   func() (io.ReadCloser, error)
}

func (b *lazyBlob) Digest() (v1.Hash, error)            { return b.digest, nil }
func (b *lazyBlob) Size() (int64, error)                { return b.size, nil }
func (b *lazyBlob) MediaType() (types.MediaType, error) { return b.mt, nil }
func (b *lazyBlob) Compressed() (io.ReadCloser, error)  { return b.open() }

// describedLayer reports the diffID its record names rather than reading
// the layer to compute it; PullLayer checks it when the bytes come.
type describedLayer struct {
	v1.Layer
	diffID v1.Hash
}

func (l *describedLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// readVerified reads the blob d describes, refusing more bytes than it
// declares and bytes of another digest.
func readVerified(r io.Reader, d v1.Descriptor) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, d.Size+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != d.Size {
		return nil, fmt.Errorf("blob %s: %d bytes, its descriptor declares %d", d.Digest, len(data), d.Size)
	}
	sum := sha256.Sum256(data)
	if d.Digest.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return nil, fmt.Errorf("blob %s: its bytes have digest sha256:%x", d.Digest, sum)
	}
	return data, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("reading %s: larger than %d bytes", path, limit)
	}
	return data, nil
}

// platformImages lists the image manifests of an index, attestation
// manifests aside.
func platformImages(desc *remote.Descriptor) ([]v1.Descriptor, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("parsing the index: %w", err)
	}
	var out []v1.Descriptor
	for _, d := range idx.Manifests {
		if d.MediaType.IsImage() && d.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			out = append(out, d)
		}
	}
	return out, nil
}

// importPlatforms imports the inline cache of each image of a
// multi-platform index; one that carries none is skipped, and only when
// none does is the source not used.
func importPlatforms(ctx context.Context, res *registry.Resolver, n name.Reference, images []v1.Descriptor) (*source, error) {
	out := &source{steps: map[string]imported{}, mounts: map[string]Mount{}}
	var errs []error
	for _, d := range images {
		m, err := importRegistry(ctx, res, n.Context().Digest(d.Digest.String()).String())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for k, v := range m.steps {
			if _, ok := out.steps[k]; !ok {
				out.steps[k] = v
			}
		}
		for id, v := range m.mounts {
			if _, ok := out.mounts[id]; !ok {
				out.mounts[id] = v
			}
		}
		if out.mountsErr == nil {
			out.mountsErr = m.mountsErr
		}
	}
	if len(errs) == len(images) {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// imageOfIndex fetches the image manifest an index holds for linux/amd64,
// the platform kiln builds; attestation manifests (platform unknown/unknown)
// are never it.
func imageOfIndex(n name.Reference, desc *remote.Descriptor, opts []remote.Option) (*remote.Descriptor, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("parsing the index: %w", err)
	}
	for _, d := range idx.Manifests {
		if !d.MediaType.IsImage() || d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			continue
		}
		if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != "amd64") {
			continue
		}
		return remote.Get(n.Context().Digest(d.Digest.String()), opts...)
	}
	return nil, errors.New("no linux/amd64 image in it")
}
