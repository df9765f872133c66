package gzchunk

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/pgzip"
)

// BenchmarkSmall: one tiny layer written and read, the common case of a
// commit of a small step.
func BenchmarkSmall(b *testing.B) {
	data := testData(4000, 1)
	for b.Loop() {
		var buf bytes.Buffer
		zw, _ := NewWriter(&buf, flate.DefaultCompression)
		zw.Write(data)
		zw.Close()
		zr, err := NewReader(&buf)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, zr)
		zr.Close()
	}
}

const benchSize = 200 << 20

var benchTar = sync.OnceValues(func() ([]byte, error) {
	// A real tree makes a realistic layer: KILN_GZ_BENCH_TAR names a tar
	// file to use instead (its first benchSize bytes).
	if p := os.Getenv("KILN_GZ_BENCH_TAR"); p != "" {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, benchSize))
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, root := range []string{runtime.GOROOT(), "/usr/share", "/usr/lib"} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || buf.Len() >= benchSize {
				return fs.SkipDir
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			hdr, _ := tar.FileInfoHeader(fi, "")
			hdr.Name = p
			hdr.Size = int64(len(data))
			tw.WriteHeader(hdr)
			tw.Write(data)
			return nil
		})
	}
	tw.Close()
	return buf.Bytes(), nil
})

func benchData(b *testing.B) []byte {
	data, err := benchTar()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	return data
}

func pgzipCompress(b *testing.B, data []byte, level int) []byte {
	var buf bytes.Buffer
	zw, err := pgzip.NewWriterLevel(&buf, level)
	if err != nil {
		b.Fatal(err)
	}
	zw.SetConcurrency(ChunkSize, 2*runtime.GOMAXPROCS(0))
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

// BenchmarkEncode compares the Writer with pgzip (kiln's encoder before
// it, the same 1 MiB blocks primed with the previous one's window) at the
// same level; "bytes" is the compressed size.
func BenchmarkEncode(b *testing.B) {
	for _, level := range []int{flate.DefaultCompression, flate.BestSpeed} {
		b.Run("pgzip/level="+itoa(level), func(b *testing.B) {
			data := benchData(b)
			var n int
			for b.Loop() {
				n = len(pgzipCompress(b, data, level))
			}
			b.ReportMetric(float64(n), "bytes")
		})
		b.Run("gzchunk/level="+itoa(level), func(b *testing.B) {
			data := benchData(b)
			var n int
			for b.Loop() {
				var buf bytes.Buffer
				zw, _ := NewWriter(&buf, level)
				zw.Write(data)
				zw.Close()
				n = buf.Len()
			}
			b.ReportMetric(float64(n), "bytes")
		})
	}
}

// BenchmarkDecode: klauspost's gzip.Reader (one core) and the Reader, on
// a pgzip stream (one member, as other tools write: the Reader streams it)
// and on a chunked one.
func BenchmarkDecode(b *testing.B) {
	var single, chunked []byte
	setup := func(b *testing.B) []byte {
		data := benchData(b)
		if single == nil {
			single = pgzipCompress(b, data, flate.DefaultCompression)
			var buf bytes.Buffer
			zw, _ := NewWriter(&buf, flate.DefaultCompression)
			zw.Write(data)
			zw.Close()
			chunked = buf.Bytes()
		}
		return data
	}
	serial := func(b *testing.B, z []byte) {
		for b.Loop() {
			zr, err := gzip.NewReader(bytes.NewReader(z))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, struct{ io.Reader }{zr}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("klauspost/pgzip-stream", func(b *testing.B) { setup(b); serial(b, single) })
	b.Run("klauspost/chunked", func(b *testing.B) { setup(b); serial(b, chunked) })
	ours := func(b *testing.B, z []byte) {
		for b.Loop() {
			zr, err := NewReader(bytes.NewReader(z))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, zr); err != nil {
				b.Fatal(err)
			}
			zr.Close()
		}
	}
	b.Run("gzchunk/pgzip-stream", func(b *testing.B) { setup(b); ours(b, single) })
	b.Run("gzchunk/chunked", func(b *testing.B) { setup(b); ours(b, chunked) })
}

func itoa(n int) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// BenchmarkInflate: one core decoding kiln members, the fast decoder
// against klauspost's streaming one.
func BenchmarkInflate(b *testing.B) {
	var ms [][]byte
	setup := func(b *testing.B) {
		data := benchData(b)
		if ms == nil {
			for off := 0; off < len(data); off += ChunkSize {
				m, err := compressMember(nil, data[off:min(off+ChunkSize, len(data))], flate.DefaultCompression)
				if err != nil {
					b.Fatal(err)
				}
				ms = append(ms, m)
			}
		}
	}
	b.Run("fast", func(b *testing.B) {
		setup(b)
		f := newInflater()
		buf := make([]byte, 0, ChunkSize+copySlack)
		for b.Loop() {
			for _, m := range ms {
				if _, ok := f.inflate(buf, m[headerLen:len(m)-trailerLen], int(le.Uint32(m[len(m)-4:]))); !ok {
					b.Fatal("the fast decoder fell back")
				}
			}
		}
	})
	b.Run("klauspost", func(b *testing.B) {
		setup(b)
		buf := make([]byte, ChunkSize)
		for b.Loop() {
			for _, m := range ms {
				fr := flate.NewReader(bytes.NewReader(m[headerLen : len(m)-trailerLen]))
				if _, err := io.ReadFull(fr, buf[:le.Uint32(m[len(m)-4:])]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
