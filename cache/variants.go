package cache

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"

	"github.com/kiln-build/kiln/internal/ctxio"
)

// Compression names a layer encoding an export can ask for.
type Compression struct {
	Kind  string // "gzip", "zstd" or "uncompressed"
	Level int    // 0 = the codec's default
}

// Recompressed returns the layers encoded as c: a layer already in that
// encoding (and, for the default level, any gzip layer asked as gzip) is
// returned as is; other encodings are made once from the stored blob and
// remembered under ROOT/variants/, so a second export costs nothing.
func (s *Store) Recompressed(ctx context.Context, layers []LayerInfo, c Compression) ([]LayerInfo, error) {
	out := make([]LayerInfo, len(layers))
	for i, l := range layers {
		v, err := s.variant(ctx, l, c)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func kindOf(mt types.MediaType) string {
	switch mt {
	case types.OCILayerZStd:
		return "zstd"
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return "uncompressed"
	}
	return "gzip"
}

func (s *Store) variant(ctx context.Context, l LayerInfo, c Compression) (LayerInfo, error) {
	if kindOf(l.MediaType) == c.Kind && c.Level == 0 {
		return l, nil
	}
	dir := filepath.Join(s.Root, "variants")
	rec := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.json", l.DiffID.Hex, c.Kind, c.Level))
	if data, err := os.ReadFile(rec); err == nil {
		var v LayerInfo
		if json.Unmarshal(data, &v) == nil {
			if _, err := os.Stat(s.blobPath(v.Digest)); err == nil {
				v.Dir = l.Dir
				return v, nil
			}
		}
	}
	b, mt, err := s.encode(ctx, l, c)
	if err != nil {
		return LayerInfo{}, fmt.Errorf("recompressing layer %s as %s: %w", l.DiffID, c.Kind, err)
	}
	defer b.discard()
	if err := s.storeBlob(b); err != nil {
		return LayerInfo{}, err
	}
	v := LayerInfo{DiffID: l.DiffID, Digest: b.digest, Size: b.size, MediaType: mt, Dir: l.Dir}
	data, err := json.Marshal(LayerInfo{DiffID: v.DiffID, Digest: v.Digest, Size: v.Size, MediaType: v.MediaType})
	if err != nil {
		return LayerInfo{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return LayerInfo{}, err
	}
	if err := s.writeAtomic(rec, data); err != nil {
		return LayerInfo{}, fmt.Errorf("recompressing layer %s as %s: %w", l.DiffID, c.Kind, err)
	}
	return v, nil
}

// encode writes the uncompressed layer in encoding c to a temp blob,
// checking on the way that it still hashes to its diffID.
func (s *Store) encode(ctx context.Context, l LayerInfo, c Compression) (*tempBlob, types.MediaType, error) {
	src, err := s.Layer(l, "").Uncompressed()
	if err != nil {
		return nil, "", err
	}
	defer src.Close()
	f, err := os.CreateTemp(s.tmp(), "blob-")
	if err != nil {
		return nil, "", err
	}
	blob := &tempBlob{path: f.Name()}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			blob.discard()
		}
	}()
	digestHash, diffHash := sha256.New(), sha256.New()
	counted := &countingWriter{w: io.MultiWriter(f, digestHash)}
	enc, mt, err := newLayerEncoder(counted, c)
	if err != nil {
		return nil, "", err
	}
	if _, err := io.Copy(io.MultiWriter(enc, diffHash), ctxio.Reader(ctx, src)); err != nil {
		return nil, "", err
	}
	if err := enc.Close(); err != nil {
		return nil, "", err
	}
	if err := syncFile(f); err != nil {
		return nil, "", err
	}
	if err := f.Close(); err != nil {
		return nil, "", err
	}
	if got := sum(diffHash); got != l.DiffID {
		return nil, "", errors.New("stored layer does not match its diffID " + l.DiffID.String() + " (got " + got.String() + ")")
	}
	ok = true
	blob.diffID, blob.digest, blob.size = l.DiffID, sum(digestHash), counted.n
	return blob, mt, nil
}

// newLayerEncoder starts the encoder of c writing to w. For a given input
// its bytes depend only on c (and the codec's version), never on the
// machine: gzip through newGzipWriter, and zstd's concurrency only lets
// the next block start early, the stream being that of a sequential
// encoder (TestCompressionDeterministic checks both).
func newLayerEncoder(w io.Writer, c Compression) (io.WriteCloser, types.MediaType, error) {
	switch c.Kind {
	case "zstd":
		level := zstd.SpeedDefault
		if c.Level > 0 {
			level = zstd.EncoderLevelFromZstd(c.Level)
		}
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
		if err != nil {
			return nil, "", err
		}
		return zw, types.OCILayerZStd, nil
	case "gzip":
		level := flate.DefaultCompression
		if c.Level > 0 {
			level = c.Level
		}
		gz, err := newGzipWriter(w, level)
		if err != nil {
			return nil, "", err
		}
		return gz, types.OCILayer, nil
	case "uncompressed":
		return nopWriteCloser{w}, types.OCIUncompressedLayer, nil
	}
	return nil, "", fmt.Errorf("unknown compression %q (want gzip, zstd or uncompressed)", c.Kind)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
