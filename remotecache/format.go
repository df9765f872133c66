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
}

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
func encodeRecords(entries []Entry) ([]byte, []cache.LayerInfo, error) {
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
	data, err := json.Marshal(recordsFile{Records: recs})
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
	var f recordsFile
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
func build(store *cache.Store, entries []Entry) (v1.Image, []cache.LayerInfo, error) {
	recs, layers, err := encodeRecords(entries)
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
	recs, _, err := encodeRecords(entries)
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
