package cache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/layer"
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

	blob, err := s.download(ctx, l, fsDir)
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
	// far slower); one syncfs makes them all durable before publish can
	// make them visible.
	if err := syncFilesystem(fsDir); err != nil {
		return LayerInfo{}, err
	}
	info := LayerInfo{DiffID: diffID, Digest: blob.digest, Size: blob.size, MediaType: mt}
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

// download reads l's compressed stream once: into a temp blob and its
// digest, and through the decompressor into the diffID hash and Unpack.
func (s *Store) download(ctx context.Context, l v1.Layer, fsDir string) (*tempBlob, error) {
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

	digestHash, diffHash := sha256.New(), sha256.New()
	bw := bufio.NewWriterSize(f, 1<<20)
	counted := &countingWriter{w: io.MultiWriter(bw, digestHash)}
	compressed := bufio.NewReaderSize(io.TeeReader(rc, counted), 1<<20)
	r, closeDec, err := decompress(compressed)
	if err != nil {
		return blob, err
	}
	defer closeDec()

	// Decompression (with the blob write and digest) runs in its own
	// goroutine, Unpack (with the diffID) in this one: on two cores that
	// overlaps the slow half with the file writes.
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.Copy(pw, r)
		if err == nil {
			// Bytes past the end of the compressed stream belong to
			// the blob too.
			_, err = io.Copy(io.Discard, compressed)
		}
		pw.CloseWithError(err)
	}()
	err = layer.Unpack(ctx, io.TeeReader(pr, diffHash), fsDir)
	pr.CloseWithError(errors.New("unpacking stopped")) // unblocks the decompressor on error
	<-done
	if err != nil {
		return blob, err
	}
	if err := bw.Flush(); err != nil {
		return blob, fmt.Errorf("writing blob: %w", err)
	}
	if err := f.Sync(); err != nil {
		return blob, fmt.Errorf("syncing blob: %w", err)
	}
	blob.diffID = sum(diffHash)
	blob.digest = sum(digestHash)
	blob.size = counted.n
	return blob, nil
}
