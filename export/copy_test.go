package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

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

// BenchmarkOCIArchive100MB exports an image with one 100 MB layer to an
// OCI archive: the blob is read, checked against its digest and written.
func BenchmarkOCIArchive100MB(b *testing.B) {
	data := make([]byte, 100<<20)
	for i := range data {
		data[i] = byte(i * 7 >> 3)
	}
	img := imageOf(b, static.NewLayer(data, types.OCILayer))
	dest := filepath.Join(b.TempDir(), "out.tar")
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if err := OCIArchive(context.Background(), img, dest, nil); err != nil {
			b.Fatal(err)
		}
	}
}
