// Package remotecache moves kiln's step records, and the layers they name,
// between the store and a registry or an OCI layout directory
// (--cache-to, --cache-from). The format is specified in docs/cache.md,
// "Remote cache": an OCI image manifest with artifactType
// application/vnd.kiln.cache.v1+json whose config is the records and whose
// layers are the very blobs the images use.
package remotecache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/image"
)

const (
	// ArtifactType is the artifactType of a cache manifest.
	ArtifactType = "application/vnd.kiln.cache.v1+json"
	// RecordsMediaType is the media type of its config blob, the records.
	RecordsMediaType types.MediaType = "application/vnd.kiln.cache.records.v1+json"
	// InlineKey is the top-level key of an image config that holds the
	// records of --cache-to type=inline (as BuildKit's
	// "moby.buildkit.cache.v0"). Runtimes ignore keys they do not know.
	InlineKey = "dev.kiln.cache.v1"
	// maxRecordsSize bounds the records blob read from a source: a few
	// hundred bytes a step, so a million steps.
	maxRecordsSize = 256 << 20
)

// Entry is one step record with the layer it produced (zero when empty).
type Entry struct {
	Key    string
	Record cache.StepRecord
	Layer  cache.LayerInfo
}

// recordsFile is the records blob. Fields are in a fixed order and the
// records sorted by key, so the same records always encode to the same
// bytes, and so to the same manifest digest.
type recordsFile struct {
	Records []recordJSON `json:"records"`
	// Mounts are cache mounts by id, sorted by id (mounts=true). Absent
	// otherwise, so a cache without them has the bytes it always had.
	Mounts []mountJSON `json:"mounts,omitempty"`
}

// mountJSON is a cache mount: layers whose application in order gives its
// contents, the first the whole of an earlier state, each later one the
// change since the one before.
type mountJSON struct {
	ID      string      `json:"id"`
	Created string      `json:"created,omitempty"`
	Layers  []layerJSON `json:"layers"`
}

type layerJSON struct {
	DiffID    string          `json:"diffID"`
	Digest    string          `json:"digest"`
	MediaType types.MediaType `json:"mediaType"`
	Size      int64           `json:"size"`
}

// Mount is the contents of a cache mount (RUN --mount=type=cache,id=ID)
// as layers, for --cache-to …,mounts=true.
type Mount struct {
	ID      string
	Layers  []cache.LayerInfo
	Created time.Time
}

const (
	// maxMountLayers bounds the layers of one imported cache mount:
	// kiln writes at most 8 (then one layer of the whole).
	maxMountLayers = 64
	maxMountIDLen  = 4096
)

type recordJSON struct {
	Key       string          `json:"key"`
	Empty     bool            `json:"empty,omitempty"`
	DiffID    string          `json:"diffID,omitempty"`
	Digest    string          `json:"digest,omitempty"`
	MediaType types.MediaType `json:"mediaType,omitempty"`
	Size      int64           `json:"size,omitempty"`
	Created   string          `json:"created,omitempty"`
}

// encodeRecords returns the canonical records blob of entries (the first
// entry of a key wins) and the layers it names, sorted by digest, each
// once.
func encodeRecords(entries []Entry, mounts []Mount) ([]byte, []cache.LayerInfo, error) {
	seen := map[string]bool{}
	var recs []recordJSON
	layers := map[v1.Hash]cache.LayerInfo{}
	for _, e := range entries {
		if seen[e.Key] {
			continue
		}
		seen[e.Key] = true
		r := recordJSON{Key: e.Key, Empty: e.Record.Empty}
		if !e.Record.Created.IsZero() {
			r.Created = e.Record.Created.UTC().Format(time.RFC3339Nano)
		}
		if !e.Record.Empty {
			l := e.Layer
			if l.Digest.Hex == "" || l.DiffID != e.Record.DiffID {
				return nil, nil, fmt.Errorf("step %s: its record names layer %s but no stored layer was given", e.Key, e.Record.DiffID)
			}
			r.DiffID, r.Digest, r.Size = l.DiffID.String(), l.Digest.String(), l.Size
			r.MediaType = image.LayerMediaType(l.MediaType, true)
			layers[l.Digest] = l
		}
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(a, b recordJSON) int { return strings.Compare(a.Key, b.Key) })
	if recs == nil {
		recs = []recordJSON{}
	}
	var ms []mountJSON
	seenMount := map[string]bool{}
	for _, m := range mounts {
		if seenMount[m.ID] || len(m.Layers) == 0 {
			continue
		}
		seenMount[m.ID] = true
		mj := mountJSON{ID: m.ID, Layers: []layerJSON{}}
		if !m.Created.IsZero() {
			mj.Created = m.Created.UTC().Format(time.RFC3339Nano)
		}
		for _, l := range m.Layers {
			mt := image.LayerMediaType(l.MediaType, true)
			mj.Layers = append(mj.Layers, layerJSON{DiffID: l.DiffID.String(), Digest: l.Digest.String(), MediaType: mt, Size: l.Size})
			layers[l.Digest] = l
		}
		ms = append(ms, mj)
	}
	slices.SortFunc(ms, func(a, b mountJSON) int { return strings.Compare(a.ID, b.ID) })
	data, err := json.Marshal(recordsFile{Records: recs, Mounts: ms})
	if err != nil {
		return nil, nil, fmt.Errorf("encoding cache records: %w", err)
	}
	out := make([]cache.LayerInfo, 0, len(layers))
	for _, l := range layers {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b cache.LayerInfo) int { return strings.Compare(a.Digest.Hex, b.Digest.Hex) })
	return data, out, nil
}

// record is a decoded record: its layer described, not yet fetched.
type record struct {
	rec       cache.StepRecord
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
}

// decodeRecords parses a records blob, refusing anything malformed: a
// source is used whole or not at all.
func decodeRecords(data []byte) (map[string]record, error) {
	var f struct {
		Records []recordJSON `json:"records"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decoding cache records: %w", err)
	}
	if f.Records == nil {
		return nil, errors.New("decoding cache records: no records list")
	}
	out := make(map[string]record, len(f.Records))
	for _, r := range f.Records {
		if r.Key == "" {
			return nil, errors.New("decoding cache records: a record without key")
		}
		d := record{rec: cache.StepRecord{Empty: r.Empty}}
		if r.Created != "" {
			t, err := time.Parse(time.RFC3339Nano, r.Created)
			if err != nil {
				return nil, fmt.Errorf("decoding cache record %s: created: %w", r.Key, err)
			}
			d.rec.Created = t
		}
		if !r.Empty {
			var err error
			if d.rec.DiffID, err = parseSHA256(r.DiffID); err != nil {
				return nil, fmt.Errorf("decoding cache record %s: diffID: %w", r.Key, err)
			}
			if d.digest, err = parseSHA256(r.Digest); err != nil {
				return nil, fmt.Errorf("decoding cache record %s: digest: %w", r.Key, err)
			}
			if r.Size <= 0 {
				return nil, fmt.Errorf("decoding cache record %s: size %d", r.Key, r.Size)
			}
			d.size, d.mediaType = r.Size, r.MediaType
		}
		out[r.Key] = d
	}
	return out, nil
}

// mountLayer is a decoded layer of a cache mount.
type mountLayer struct {
	diffID, digest v1.Hash
	size           int64
	mediaType      types.MediaType
}

// decodedMount is a decoded cache mount.
type decodedMount struct {
	layers  []mountLayer
	created time.Time
}

// decodeMounts parses the mounts section of a records blob, apart from
// the records: a mounts section kiln cannot use costs the warm cache
// mounts, not the step records.
func decodeMounts(data []byte) (map[string]decodedMount, error) {
	var f struct {
		Mounts []mountJSON `json:"mounts"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("decoding cache mounts: %w", err)
	}
	out := make(map[string]decodedMount, len(f.Mounts))
	for _, m := range f.Mounts {
		if m.ID == "" || len(m.ID) > maxMountIDLen {
			return nil, fmt.Errorf("decoding cache mounts: an id of %d bytes", len(m.ID))
		}
		if len(m.Layers) == 0 || len(m.Layers) > maxMountLayers {
			return nil, fmt.Errorf("decoding cache mount %q: %d layers (kiln reads 1 to %d)", m.ID, len(m.Layers), maxMountLayers)
		}
		d := decodedMount{}
		if m.Created != "" {
			t, err := time.Parse(time.RFC3339Nano, m.Created)
			if err != nil {
				return nil, fmt.Errorf("decoding cache mount %q: created: %w", m.ID, err)
			}
			d.created = t
		}
		for i, l := range m.Layers {
			var ml mountLayer
			var err error
			if ml.diffID, err = parseSHA256(l.DiffID); err != nil {
				return nil, fmt.Errorf("decoding cache mount %q: layer %d: diffID: %w", m.ID, i+1, err)
			}
			if ml.digest, err = parseSHA256(l.Digest); err != nil {
				return nil, fmt.Errorf("decoding cache mount %q: layer %d: digest: %w", m.ID, i+1, err)
			}
			if l.Size <= 0 {
				return nil, fmt.Errorf("decoding cache mount %q: layer %d: size %d", m.ID, i+1, l.Size)
			}
			ml.size, ml.mediaType = l.Size, l.MediaType
			if ml.mediaType == "" {
				ml.mediaType = types.OCILayer
			}
			d.layers = append(d.layers, ml)
		}
		if _, dup := out[m.ID]; dup {
			return nil, fmt.Errorf("decoding cache mounts: id %q twice", m.ID)
		}
		out[m.ID] = d
	}
	return out, nil
}

func parseSHA256(s string) (v1.Hash, error) {
	h, err := v1.NewHash(s)
	if err != nil {
		return h, err
	}
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return h, fmt.Errorf("%q is no sha256 digest", s)
	}
	return h, nil
}

// artifact is a cache manifest as a v1.Image, so that it is pushed the way
// images are (blobs first, skipped when present, mounted when the registry
// holds them elsewhere; manifest last).
type artifact struct {
	raw, config []byte
	layers      map[v1.Hash]v1.Layer
}

func (a *artifact) RawConfigFile() ([]byte, error) { return a.config, nil }
func (a *artifact) RawManifest() ([]byte, error)   { return a.raw, nil }
func (a *artifact) MediaType() (types.MediaType, error) {
	return types.OCIManifestSchema1, nil
}

func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := a.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("blob %s is not part of the cache", h)
}

// build makes the cache artifact of entries, reading layers from store.
func build(store *cache.Store, entries []Entry, mounts []Mount) (v1.Image, []cache.LayerInfo, error) {
	recs, layers, err := encodeRecords(entries, mounts)
	if err != nil {
		return nil, nil, err
	}
	cfgHash, cfgSize, err := v1.SHA256(bytes.NewReader(recs))
	if err != nil {
		return nil, nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: RecordsMediaType, Digest: cfgHash, Size: cfgSize},
		Layers:        []v1.Descriptor{},
	}
	a := &artifact{config: recs, layers: map[v1.Hash]v1.Layer{}}
	for _, l := range layers {
		mt := image.LayerMediaType(l.MediaType, true)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Digest: l.Digest, Size: l.Size})
		a.layers[l.Digest] = store.Layer(l, mt)
	}
	if a.raw, err = json.Marshal(m); err != nil {
		return nil, nil, fmt.Errorf("encoding cache manifest: %w", err)
	}
	img, err := partial.CompressedToImage(a)
	if err != nil {
		return nil, nil, err
	}
	return img, layers, nil
}

// InlineConfig returns rawConfig with the records of entries under
// InlineKey (--cache-to type=inline). The layers the records name must be
// the image's own.
func InlineConfig(rawConfig []byte, entries []Entry) ([]byte, error) {
	recs, _, err := encodeRecords(entries, nil)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimRight(rawConfig, " \n")
	if len(trimmed) < 2 || trimmed[len(trimmed)-1] != '}' {
		return nil, errors.New("adding inline cache: the image config is not a JSON object")
	}
	// Spliced rather than re-encoded, so every other byte of the config
	// stays as the planner wrote it.
	body := trimmed[:len(trimmed)-1]
	var out bytes.Buffer
	out.Write(body)
	if len(bytes.TrimSpace(body)) > 1 {
		out.WriteByte(',')
	}
	key, _ := json.Marshal(InlineKey)
	out.Write(key)
	out.WriteByte(':')
	out.Write(recs)
	out.WriteByte('}')
	return out.Bytes(), nil
}
