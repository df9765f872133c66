package cache

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kiln-build/kiln/layer"
)

// layerLikeInput is a few MiB mixing compressible text and incompressible
// bytes, so that several compression blocks are filled and the block
// boundaries fall in the middle of different kinds of data.
func layerLikeInput() []byte {
	r := rand.New(rand.NewSource(1))
	var b bytes.Buffer
	for b.Len() < 5<<20+12345 {
		if r.Intn(3) == 0 {
			chunk := make([]byte, r.Intn(64<<10))
			r.Read(chunk)
			b.Write(chunk)
			continue
		}
		for i := r.Intn(2000); i > 0; i-- {
			b.WriteString("usr/lib/x86_64-linux-gnu/libexample.so.1 0644 0:0\n")
		}
	}
	return b.Bytes()
}

// compressWith encodes in with c under the given GOMAXPROCS (which sets
// the gzip members in flight and zstd's encoder concurrency), writing in
// chunks of chunk bytes (how a tar stream happens to arrive).
func compressWith(t *testing.T, in []byte, c Compression, procs, chunk int) []byte {
	t.Helper()
	old := runtime.GOMAXPROCS(procs)
	defer runtime.GOMAXPROCS(old)
	var out bytes.Buffer
	enc, _, err := newLayerEncoder(&out, c)
	if err != nil {
		t.Fatal(err)
	}
	for p := in; len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := enc.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestCompressionDeterministic checks that a layer's compressed bytes
// depend only on its tar and the compression settings: not on the number
// of CPUs (GOMAXPROCS) nor on how the input is split into writes. This is
// what lets two machines agree on a layer digest under SOURCE_DATE_EPOCH.
func TestCompressionDeterministic(t *testing.T) {
	in := layerLikeInput()
	for _, c := range []Compression{
		{Kind: "gzip"},
		{Kind: "gzip", Level: 1},
		{Kind: "gzip", Level: 9},
		{Kind: "zstd"},
		{Kind: "zstd", Level: 19},
		{Kind: "uncompressed"},
	} {
		t.Run(fmt.Sprintf("%s-%d", c.Kind, c.Level), func(t *testing.T) {
			first := compressWith(t, in, c, 1, 256<<10)
			for _, run := range []struct{ procs, chunk int }{{2, 1000}, {8, 1 << 20}, {3, 7777}} {
				again := compressWith(t, in, c, run.procs, run.chunk)
				if !bytes.Equal(first, again) {
					t.Fatalf("GOMAXPROCS=%d, %d-byte writes: %x, GOMAXPROCS=1: %x", run.procs, run.chunk, sha256.Sum256(again), sha256.Sum256(first))
				}
			}
			var got []byte
			var err error
			switch c.Kind {
			case "gzip":
				var zr *gzip.Reader
				if zr, err = gzip.NewReader(bytes.NewReader(first)); err == nil {
					got, err = io.ReadAll(zr)
				}
			case "zstd":
				var zr *zstd.Decoder
				if zr, err = zstd.NewReader(bytes.NewReader(first)); err == nil {
					got, err = io.ReadAll(zr)
					zr.Close()
				}
			default:
				got = first
			}
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("decoding gives back %d bytes (%v), want the %d written", len(got), err, len(in))
			}
		})
	}
}

// TestCommitDirWithDeterministic commits the same files, written a second
// apart, into two empty stores under different GOMAXPROCS, with the mtime
// clamp of SOURCE_DATE_EPOCH: the same diffID and digest.
func TestCommitDirWithDeterministic(t *testing.T) {
	requireRoot(t)
	epoch := time.Unix(1700000000, 0)
	var digests []string
	for i, procs := range []int{1, 4} {
		if i > 0 {
			time.Sleep(1100 * time.Millisecond) // new mtimes, whole seconds apart
		}
		s := openStore(t)
		dir, err := s.TempDir("commit")
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"a/big": layerLikeInput(), "b": []byte("small\n")} {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		old := runtime.GOMAXPROCS(procs)
		info, _, err := s.CommitDirWith(t.Context(), dir, layer.TarOptions{ClampMtime: &epoch})
		runtime.GOMAXPROCS(old)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, info.DiffID.String()+" "+info.Digest.String())
	}
	if digests[0] != digests[1] {
		t.Fatalf("the same tree committed twice: %s vs %s", digests[0], digests[1])
	}
}
