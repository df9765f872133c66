package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/flate"
)

// sizedLayer declares a compressed size its bytes do not have.
type sizedLayer struct {
	v1.Layer
	size int64
}

func (l sizedLayer) Size() (int64, error) { return l.size, nil }

// zerosTar is a tar holding one file of n zero bytes, then trailing zero
// bytes past the end of the archive.
func zerosTar(t testing.TB, n, trailing int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(n), ModTime: fixedTime}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	buf.Write(make([]byte, trailing))
	return buf.Bytes()
}

func gzipLayer(t testing.TB, tarBytes []byte) *bytesLayer {
	return &bytesLayer{compressed: gzipBytes(t, tarBytes), diffID: sha256Of(tarBytes), mt: types.OCILayer}
}

// chunkedLayer is tarBytes as kiln compresses its layers: chunked gzip,
// inflated by the workers of gzchunk.Reader when pulled.
func chunkedLayer(t testing.TB, tarBytes []byte) *bytesLayer {
	var buf bytes.Buffer
	zw, err := newGzipWriter(&buf, flate.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(tarBytes)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return &bytesLayer{compressed: buf.Bytes(), diffID: sha256Of(tarBytes), mt: types.OCILayer}
}

// checkEmpty asserts that a failed pull left nothing in the store: no
// layer, no blob, no staging directory.
func checkEmpty(t *testing.T, s *Store) {
	t.Helper()
	for _, d := range []string{"layers", "blobs/sha256", "tmp"} {
		if got := names(t, filepath.Join(s.Root, d)); len(got) != 0 {
			t.Errorf("%s/ = %v after a refused pull, want nothing", d, got)
		}
	}
}

// TestPullLayerBounds feeds the store layers a registry could send to
// exhaust the disk or slip in other bytes: each is refused from the
// stream, with a clear error, and leaves the store as it was.
func TestPullLayerBounds(t *testing.T) {
	requireRoot(t)
	const limit = 1 << 20
	bomb := gzipLayer(t, zerosTar(t, 16<<20, 0)) // 16 MiB of zeros in ~16 KiB
	tailBomb := gzipLayer(t, zerosTar(t, 10, 16<<20))
	atLimit := zerosTar(t, limit-3*512, 0) // header and end blocks fill the rest
	if len(atLimit) != limit {
		t.Fatalf("the at-limit tar is %d bytes", len(atLimit))
	}
	good := gzipLayer(t, sampleTar(t))
	chunkedBomb := chunkedLayer(t, zerosTar(t, 16<<20, 0)) // 17 members
	tests := []struct {
		name    string
		layer   v1.Layer
		limit   int64
		want    any // a pointer to the error type expected, nil for success
		wantMsg string
	}{
		{name: "gzip bomb with a correct digest", layer: bomb, limit: limit, want: new(*LayerTooLargeError), wantMsg: "--max-layer-size"},
		{name: "bomb past the end of the tar", layer: tailBomb, limit: limit, want: new(*LayerTooLargeError), wantMsg: "1 MiB"},
		{name: "the same bomb under a raised limit", layer: bomb, limit: 32 << 20},
		{name: "exactly at the limit", layer: gzipLayer(t, atLimit), limit: limit},
		{name: "at the limit, uncompressed", layer: &bytesLayer{compressed: atLimit, diffID: sha256Of(atLimit), mt: types.DockerUncompressedLayer}, limit: limit},
		{name: "one byte over, uncompressed", layer: &bytesLayer{compressed: append(atLimit[:len(atLimit):len(atLimit)], 0), diffID: sha256Of(append(atLimit[:len(atLimit):len(atLimit)], 0)), mt: types.DockerUncompressedLayer}, limit: limit, want: new(*LayerTooLargeError)},
		{name: "more bytes than declared", layer: sizedLayer{Layer: good, size: int64(len(good.compressed)) - 100}, want: new(*LayerDigestError), wantMsg: "more than"},
		{name: "fewer bytes than declared", layer: sizedLayer{Layer: good, size: int64(len(good.compressed)) + 100}, want: new(*LayerDigestError), wantMsg: "manifest declares"},
		{name: "wrong digest", layer: lyingLayer{Layer: good, digest: ptr(sha256Of([]byte("other")))}, want: new(*LayerDigestError), wantMsg: "verifying digest"},
		{name: "chunked gzip bomb", layer: chunkedBomb, limit: limit, want: new(*LayerTooLargeError), wantMsg: "--max-layer-size"},
		{name: "chunked gzip under a raised limit", layer: chunkedBomb, limit: 32 << 20},
		{name: "chunked gzip, exactly at the limit", layer: chunkedLayer(t, atLimit), limit: limit},
		{name: "chunked gzip, wrong digest", layer: lyingLayer{Layer: chunkedBomb, digest: ptr(sha256Of([]byte("other")))}, limit: 32 << 20, want: new(*LayerDigestError), wantMsg: "verifying digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t)
			s.MaxLayerSize = tt.limit
			info, err := s.PullLayer(ctx, tt.layer)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				checkStored(t, s, info)
				return
			}
			if err == nil || !errors.As(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("PullLayer: %v, want a %T mentioning %q", err, tt.want, tt.wantMsg)
			}
			checkEmpty(t, s)
			// The refusal left nothing behind that stops the next pull.
			info, err = s.PullLayer(ctx, good)
			if err != nil {
				t.Fatalf("pulling a good layer after the refusal: %v", err)
			}
			checkStored(t, s, info)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestVerifyingReader checks that the compressed stream itself fails,
// rather than ends, when its bytes are not the layer's: whatever reads it
// (the decompressor, the unpacker) never sees a clean end.
func TestVerifyingReader(t *testing.T) {
	data := []byte("layer bytes")
	tests := []struct {
		name string
		want v1.Hash
		size int64
		ok   bool
	}{
		{name: "right", want: sha256Of(data), size: int64(len(data)), ok: true},
		{name: "right, size unknown", want: sha256Of(data), size: -1, ok: true},
		{name: "wrong digest", want: sha256Of([]byte("x")), size: int64(len(data))},
		{name: "too long", want: sha256Of(data), size: 4},
		{name: "too short", want: sha256Of(data), size: 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &verifyingReader{r: bytes.NewReader(data), h: sha256.New(), want: tt.want, size: tt.size}
			_, err := io.ReadAll(v)
			var de *LayerDigestError
			if tt.ok != (err == nil) || (!tt.ok && !errors.As(err, &de)) {
				t.Fatalf("reading: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
