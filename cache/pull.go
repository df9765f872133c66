package cache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/trace"
)

// PullLayer makes a base-image layer available unpacked. If its diffID is
// already stored it returns at once, reading no layer bytes: a fully cached
// build downloads nothing. Otherwise it reads l.Compressed() once, teeing
// the bytes into a blob (verified against l.Digest()) while decompressing
// them (gzip, zstd or plain tar, told apart by magic bytes) into a fresh
// overlay-format directory, verifies the diffID, and moves both into place.
//
// Within one Store, concurrent pulls of the same layer wait for each other
// instead of downloading it twice.
func (s *Store) PullLayer(ctx context.Context, l v1.Layer) (LayerInfo, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return LayerInfo{}, fmt.Errorf("reading layer diffID: %w", err)
	}
	if info, ok, err := s.LayerByDiffID(diffID); err != nil || ok {
		if ok {
			// prune tells used from unused layers by this time
			now := time.Now()
			_ = os.Chtimes(s.layerDir(diffID), now, now)
		}
		return info, err
	}
	unlock, err := s.pulls.lock(ctx, diffID.Hex)
	if err != nil {
		return LayerInfo{}, err
	}
	defer unlock()
	if info, ok, err := s.LayerByDiffID(diffID); err != nil || ok {
		return info, err
	}
	info, err := s.pull(ctx, l, diffID)
	if err != nil {
		return LayerInfo{}, fmt.Errorf("pulling layer %s: %w", diffID, err)
	}
	return info, nil
}

func (s *Store) pull(ctx context.Context, l v1.Layer, diffID v1.Hash) (LayerInfo, error) {
	staging, err := os.MkdirTemp(s.tmp(), "layer-")
	if err != nil {
		return LayerInfo{}, err
	}
	published := false
	defer func() {
		if !published {
			os.RemoveAll(staging)
		}
	}()
	fsDir := filepath.Join(staging, "fs")
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		return LayerInfo{}, err
	}

	_, unpackSpan := trace.Start(ctx, "download and unpack")
	blob, err := s.download(ctx, l, fsDir)
	unpackSpan.End()
	if blob != nil {
		defer blob.discard()
	}
	if err != nil {
		return LayerInfo{}, err
	}
	want, err := l.Digest()
	if err != nil {
		return LayerInfo{}, fmt.Errorf("reading layer digest: %w", err)
	}
	if blob.digest != want {
		return LayerInfo{}, fmt.Errorf("verifying digest: got %s, want %s", blob.digest, want)
	}
	if blob.diffID != diffID {
		return LayerInfo{}, fmt.Errorf("verifying diffID: got %s, want %s", blob.diffID, diffID)
	}
	mt, err := l.MediaType()
	if err != nil {
		return LayerInfo{}, fmt.Errorf("reading layer media type: %w", err)
	}

	// The unpacked files were written without fsync (one per file would be
	// far slower). Where there is no boot id to scope an unsynced publish
	// by, one syncfs makes them durable first; otherwise the background
	// syncer does it after publishing (durable.go).
	if syncInline() {
		if err := syncFilesystem(fsDir); err != nil {
			return LayerInfo{}, err
		}
	}
	info := LayerInfo{DiffID: diffID, Digest: blob.digest, Size: blob.size, MediaType: mt}
	_, pubSpan := trace.Start(ctx, "publish pulled layer")
	defer pubSpan.End()
	if err := s.storeBlob(blob); err != nil {
		return LayerInfo{}, err
	}
	info, err = s.publish(staging, info)
	if err != nil {
		return LayerInfo{}, err
	}
	published = true // publish moved or removed staging
	return info, nil
}

// DefaultMaxLayerSize bounds the unpacked size of one pulled layer when
// Store.MaxLayerSize is unset. It is above the largest layers published
// (a few GiB to ~20 GiB for CUDA and ML frameworks) and stops a
// decompression bomb long before it can fill a typical disk.
const DefaultMaxLayerSize = 64 << 30

func (s *Store) maxLayerSize() int64 {
	if s.MaxLayerSize > 0 {
		return s.MaxLayerSize
	}
	return DefaultMaxLayerSize
}

// LayerTooLargeError is a layer that unpacks to more than the store's
// limit: a decompression bomb, or a genuinely huge layer.
type LayerTooLargeError struct {
	Digest v1.Hash
	Limit  int64
}

func (e *LayerTooLargeError) Error() string {
	return fmt.Sprintf("layer %s unpacks to more than %s, kiln's limit for one layer: unpacking stopped and nothing was stored (if the image is genuine, raise the limit with --max-layer-size or layer-size under [limits] in kiln.toml)",
		e.Digest, humanSize(e.Limit))
}

// LayerDigestError is a layer whose bytes are not those its digest (or
// declared size) names: corrupt or tampered with in transit or at the
// source. Nothing of it is stored.
type LayerDigestError struct {
	Want v1.Hash
	// Got is the digest of what arrived (zero when the size alone ruled).
	Got v1.Hash
	// Size is the size the manifest declares, N the bytes that came.
	Size, N int64
}

func (e *LayerDigestError) Error() string {
	switch {
	case e.Size >= 0 && e.N > e.Size:
		return fmt.Sprintf("verifying size of layer %s: more than the %d bytes the manifest declares came: the layer is refused and nothing was stored", e.Want, e.Size)
	case e.Size >= 0 && e.N != e.Size:
		return fmt.Sprintf("verifying size of layer %s: %d bytes came, the manifest declares %d: the layer is refused and nothing was stored", e.Want, e.N, e.Size)
	}
	return fmt.Sprintf("verifying digest of layer %s: the bytes that came have digest %s: the layer is corrupt or was tampered with, and nothing was stored", e.Want, e.Got)
}

// verifyingReader hashes a compressed layer as it streams and fails the
// stream itself, rather than ending it, when the bytes go past the
// declared size or end with the wrong digest: whatever reads the layer
// never sees a clean end of bytes that are not the layer. Registry
// answers and the store's own blobs are read through it alike.
type verifyingReader struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
	size int64 // declared; -1 when unknown
	n    int64
	// onBad, when set, turns a mismatch into the error returned (and
	// may act on it, as the store removes a damaged blob).
	onBad func(*LayerDigestError) error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		return 0, v.bad(&LayerDigestError{Want: v.want, Size: v.size, N: v.n})
	}
	if err == io.EOF {
		if v.size >= 0 && v.n != v.size {
			return n, v.bad(&LayerDigestError{Want: v.want, Size: v.size, N: v.n})
		}
		if got := sum(v.h); got != v.want {
			return n, v.bad(&LayerDigestError{Want: v.want, Got: got, Size: -1})
		}
	}
	return n, err
}

func (v *verifyingReader) bad(e *LayerDigestError) error {
	if v.onBad != nil {
		return v.onBad(e)
	}
	return e
}

// boundedReader fails with a LayerTooLargeError once more than limit bytes
// have come out of a decompressor.
type boundedReader struct {
	r      io.Reader
	left   int64
	digest v1.Hash
	limit  int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, &LayerTooLargeError{Digest: b.digest, Limit: b.limit}
	}
	// One byte past the limit tells a layer of exactly the limit from a
	// larger one.
	if b.left < int64(len(p)) {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, &LayerTooLargeError{Digest: b.digest, Limit: b.limit}
	}
	return n, err
}

func humanSize(n int64) string {
	for _, u := range []struct {
		unit  string
		shift uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.unit)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// download reads l's compressed stream once: verified against its digest
// and declared size as it streams, into a temp blob, and through the
// decompressor (its output bounded by the store's layer size limit) into
// the diffID hash and Unpack. The bounds sit in this reader chain, not in
// the unpacker, so that they hold whatever unpacks.
func (s *Store) download(ctx context.Context, l v1.Layer, fsDir string) (*tempBlob, error) {
	return s.downloadTo(ctx, l, func(ctx context.Context, r io.Reader) error { return layer.Unpack(ctx, r, fsDir) })
}

// downloadTo is download with the uncompressed tar going to unpack (a
// cache mount's instance applies it with the rootfs sink).
func (s *Store) downloadTo(ctx context.Context, l v1.Layer, unpack func(context.Context, io.Reader) error) (*tempBlob, error) {
	want, err := l.Digest()
	if err != nil {
		return nil, fmt.Errorf("reading layer digest: %w", err)
	}
	size, err := l.Size()
	if err != nil {
		size = -1 // unknown: the digest still rules
	}
	f, err := os.CreateTemp(s.tmp(), "blob-")
	if err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	blob := &tempBlob{path: f.Name()}
	defer f.Close()

	rc, err := l.Compressed()
	if err != nil {
		return blob, fmt.Errorf("opening layer: %w", err)
	}
	defer rc.Close()

	diffHash := sha256.New()
	verified := &verifyingReader{r: rc, h: sha256.New(), want: want, size: size}
	bw := bufio.NewWriterSize(f, 1<<20)
	compressed := bufio.NewReaderSize(io.TeeReader(verified, bw), 1<<20)
	dec, closeDec, err := decompress(compressed)
	if err != nil {
		return blob, err
	}
	defer closeDec()
	limit := s.maxLayerSize()
	r := &boundedReader{r: dec, left: limit, digest: want, limit: limit}

	// Decompression (with the blob write and digest) runs in its own
	// goroutine, Unpack (with the diffID) in this one: on two cores that
	// overlaps the slow half with the file writes. The pipe is closed only
	// once the compressed stream has been read to its verified end, so
	// Unpack never sees the end of a layer that fails its digest.
	pr, pw := io.Pipe()
	done := make(chan struct{})
	var streamErr error
	go func() {
		defer close(done)
		_, err := io.Copy(pw, r)
		if err == nil {
			// Bytes past the end of the compressed stream belong to
			// the blob too.
			_, err = io.Copy(io.Discard, compressed)
		}
		streamErr = err
		pw.CloseWithError(err)
	}()
	err = unpack(ctx, io.TeeReader(pr, diffHash))
	pr.CloseWithError(errors.New("unpacking stopped")) // unblocks the decompressor on error
	<-done
	// A refused stream is the cause, whatever the unpacker made of it.
	var tooLarge *LayerTooLargeError
	var bad *LayerDigestError
	if errors.As(streamErr, &tooLarge) || errors.As(streamErr, &bad) {
		return blob, streamErr
	}
	if err != nil {
		return blob, err
	}
	if err := bw.Flush(); err != nil {
		return blob, fmt.Errorf("writing blob: %w", err)
	}
	if syncInline() {
		if err := f.Sync(); err != nil {
			return blob, fmt.Errorf("syncing blob: %w", err)
		}
	}
	blob.diffID = sum(diffHash)
	blob.digest = sum(verified.h)
	blob.size = verified.n
	return blob, nil
}
