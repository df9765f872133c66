package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestCopyOverlapped(t *testing.T) {
	errRead, errWrite := errors.New("read failed"), errors.New("write failed")
	for _, tc := range []struct {
		name      string
		size      int
		failRead  int // fail the read once this many bytes are out (-1: never)
		failWrite int // fail the write once this many bytes are in (-1: never)
		want      error
	}{
		{"empty", 0, -1, -1, nil},
		{"one byte", 1, -1, -1, nil},
		{"chunk-1", copyChunk - 1, -1, -1, nil},
		{"chunk", copyChunk, -1, -1, nil},
		{"chunk+1", copyChunk + 1, -1, -1, nil},
		{"many chunks", 7*copyChunk + 12345, -1, -1, nil},
		{"read error", 5 * copyChunk, 2*copyChunk + 7, -1, errRead},
		{"write error", 5 * copyChunk, -1, 3 * copyChunk, errWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := bytes.Repeat([]byte("0123456789abcdef"), tc.size/16+1)[:tc.size]
			var src io.Reader = bytes.NewReader(data)
			if tc.failRead >= 0 {
				src = io.MultiReader(io.LimitReader(src, int64(tc.failRead)), failing{errRead})
			}
			var out bytes.Buffer
			var dst io.Writer = &out
			if tc.failWrite >= 0 {
				dst = &limitedWriter{w: &out, left: tc.failWrite, err: errWrite}
			}
			n, err := copyOverlapped(dst, src)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if n != int64(out.Len()) {
				t.Errorf("returned %d bytes written, wrote %d", n, out.Len())
			}
			if tc.want == nil && !bytes.Equal(out.Bytes(), data) {
				t.Errorf("copied %d bytes that differ from the %d of the source", out.Len(), len(data))
			}
		})
	}
}

type failing struct{ err error }

func (f failing) Read([]byte) (int, error) { return 0, f.err }

type limitedWriter struct {
	w    io.Writer
	left int
	err  error
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > l.left {
		n, _ := l.w.Write(p[:l.left])
		l.left = 0
		return n, l.err
	}
	l.left -= len(p)
	return l.w.Write(p)
}

// claimingReader says it verifies a digest, and does not.
type claimingReader struct {
	io.Reader
	digest v1.Hash
}

func (c claimingReader) Close() error            { return nil }
func (c claimingReader) VerifiesDigest() v1.Hash { return c.digest }

// TestCopyBlobTrustsOnlyItsDigest: a reader that verifies the blob's own
// digest is not hashed again; one that claims another digest is.
func TestCopyBlobTrustsOnlyItsDigest(t *testing.T) {
	good := []byte(strings.Repeat("layer bytes ", 1000))
	d := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(good))}
	other := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	bad := bytes.ToUpper(good)
	for _, tc := range []struct {
		name    string
		claims  v1.Hash
		content []byte
		wantErr bool
	}{
		{"verifying reader, good bytes", d, good, false},
		{"claims another digest, bad bytes", other, bad, true},
		{"claims nothing, bad bytes", v1.Hash{}, bad, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := blob{digest: d, size: int64(len(tc.content)), open: func() (io.ReadCloser, error) {
				return claimingReader{bytes.NewReader(tc.content), tc.claims}, nil
			}}
			var out bytes.Buffer
			err := copyBlob(context.Background(), &out, b)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}
