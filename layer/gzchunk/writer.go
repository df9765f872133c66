package gzchunk

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
)

// Writer compresses what is written to it into kiln's chunked gzip. Its
// output depends only on the input bytes and the level: not on how the
// input is split into writes, on GOMAXPROCS or on timing. A Writer is not
// safe for concurrent use.
type Writer struct {
	w     io.Writer
	level int
	buf   []byte  // the chunk being filled
	queue []*wjob // chunks being compressed, in input order
	depth int     // chunks in flight at most
	any   bool    // a chunk was cut: an empty input still gives a member
	err   error   // sticky
}

// wjob is one chunk being compressed into a member.
type wjob struct {
	in   []byte
	out  []byte
	err  error
	done chan struct{}
}

// NewWriter returns a Writer compressing into w at level, a
// klauspost/compress/flate level from HuffmanOnly (-2) to
// BestCompression (9), DefaultCompression (-1) included. Close must be
// called to write the last member.
func NewWriter(w io.Writer, level int) (*Writer, error) {
	if level < flate.HuffmanOnly || level > flate.BestCompression {
		return nil, fmt.Errorf("gzip level %d is out of range: use -2 (Huffman only) to 9 (best), or -1 for the default", level)
	}
	return &Writer{w: w, level: level, depth: 2 * runtime.GOMAXPROCS(0)}, nil
}

// Write buffers p, compressing each ChunkSize piece as it fills.
func (z *Writer) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	n := len(p)
	for len(p) > 0 {
		if z.buf == nil {
			z.buf = getChunk()
		}
		c := min(ChunkSize-len(z.buf), len(p))
		z.buf = append(z.buf, p[:c]...)
		p = p[c:]
		if len(z.buf) == ChunkSize {
			if err := z.submit(z.buf); err != nil {
				return n - len(p), err
			}
			z.buf = nil
		}
	}
	return n, nil
}

// submit starts compressing in, first writing out the oldest member if
// depth chunks are in flight, then whatever else is already done (so
// output reaches w as early as order allows).
func (z *Writer) submit(in []byte) error {
	z.any = true
	if len(z.queue) >= z.depth {
		if err := z.writeHead(); err != nil {
			return err
		}
	}
	j := &wjob{in: in, done: make(chan struct{})}
	z.queue = append(z.queue, j)
	go func() {
		j.out, j.err = compressMember(getOut(outCap), j.in, z.level)
		close(j.done)
	}()
	for len(z.queue) > 0 {
		select {
		case <-z.queue[0].done:
			if err := z.writeHead(); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return nil
}

// writeHead waits for the oldest chunk in flight and writes its member.
func (z *Writer) writeHead() error {
	j := z.queue[0]
	<-j.done
	z.queue[0] = nil
	z.queue = z.queue[1:]
	putChunk(j.in)
	defer putOut(j.out)
	if j.err != nil {
		z.err = fmt.Errorf("compressing: %w", j.err)
		return z.err
	}
	if _, err := z.w.Write(j.out); err != nil {
		z.err = err
		return err
	}
	return nil
}

// errClosed is what a Writer returns once closed.
var errClosed = errors.New("gzchunk: write to a closed writer")

// Close compresses what is buffered, writes every member in order and
// waits for the compressors. It does not close the underlying writer.
func (z *Writer) Close() error {
	if z.err == errClosed {
		return nil
	}
	if z.err == nil && (len(z.buf) > 0 || !z.any) {
		if len(z.queue) == 0 {
			// One small (or the only) chunk: compressing it here spares
			// a goroutine, which matters for the many tiny layers.
			out, err := compressMember(getOut(len(z.buf)+len(z.buf)/64+1024), z.buf, z.level)
			putChunk(z.buf)
			z.buf = nil
			z.any = true
			if err != nil {
				z.err = fmt.Errorf("compressing: %w", err)
			} else if _, err := z.w.Write(out); err != nil {
				z.err = err
			}
			putOut(out)
		} else {
			z.submit(z.buf) // an error is kept in z.err
			z.buf = nil
		}
	}
	for len(z.queue) > 0 {
		if z.err != nil {
			// Wait for the compressors all the same: none may outlive
			// Close.
			j := z.queue[0]
			<-j.done
			z.queue = z.queue[1:]
			continue
		}
		z.writeHead()
	}
	if z.err != nil {
		return z.err
	}
	z.err = errClosed
	return nil
}

// compressMember appends to dst the member holding in. A chunk that does
// not compress (already compressed or random data: a tarball, a model
// file, /dev/urandom) is stored rather than deflated, which costs a copy
// instead of seconds of CPU per hundred MiB; the choice depends on the
// bytes alone, so the output stays reproducible.
func compressMember(dst, in []byte, level int) ([]byte, error) {
	if level != flate.NoCompression && level != flate.HuffmanOnly && incompressible(in) {
		level = flate.NoCompression
	}
	start := len(dst)
	dst = append(dst, make([]byte, headerLen)...)
	fw := getFlate(level)
	defer putFlate(level, fw)
	aw := appendWriter{b: dst}
	fw.Reset(&aw)
	if _, err := fw.Write(in); err != nil {
		return dst, err
	}
	if err := fw.Close(); err != nil {
		return dst, err
	}
	dst = aw.b
	dst = le.AppendUint32(dst, crc32.ChecksumIEEE(in))
	dst = le.AppendUint32(dst, uint32(len(in)))
	putHeader(dst[start:], uint32(len(dst)-start))
	return dst, nil
}

// appendWriter collects a member's deflate data.
type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// Buffers and flate state are reused across Writers: a commit makes one
// Writer per layer, and a flate writer at the default level is hundreds
// of KiB to set up.
var (
	chunkPool  sync.Pool
	outPool    sync.Pool
	flatePools [flate.BestCompression - flate.HuffmanOnly + 1]sync.Pool
)

// getChunk returns a buffer for a chunk: a pooled one of ChunkSize, or
// none (nil), which the first writes grow as needed: a small layer never
// costs a whole chunk.
func getChunk() []byte {
	if b, ok := chunkPool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

func putChunk(b []byte) {
	if cap(b) >= ChunkSize && cap(b) <= 2*ChunkSize {
		chunkPool.Put(&b)
	}
}

// outCap holds a member of ChunkSize incompressible bytes without growing.
const outCap = ChunkSize + ChunkSize/64 + 1024

// getOut returns an empty buffer of capacity n at least: pooled when one
// is large enough, else new.
func getOut(n int) []byte {
	if b, ok := outPool.Get().(*[]byte); ok {
		if cap(*b) >= n {
			return (*b)[:0]
		}
		outPool.Put(b)
	}
	return make([]byte, 0, n)
}

// putOut pools the large buffers, those a chunk fills; small ones (of a
// small layer) are left to the collector.
func putOut(b []byte) {
	if cap(b) >= ChunkSize && cap(b) <= 2*maxMember {
		outPool.Put(&b)
	}
}

func getFlate(level int) *flate.Writer {
	if fw, ok := flatePools[level-flate.HuffmanOnly].Get().(*flate.Writer); ok {
		return fw
	}
	fw, err := flate.NewWriter(nil, level)
	if err != nil {
		panic(err) // NewWriter checked the level
	}
	return fw
}

func putFlate(level int, fw *flate.Writer) {
	fw.Reset(nil)
	flatePools[level-flate.HuffmanOnly].Put(fw)
}

// Sampling: two stretches of a chunk (its start and its middle) are
// deflated at the fastest level; if that saves under 2% of them, the chunk
// is taken for incompressible.
const (
	sampleLen      = 16 << 10
	minSampledSize = 4 * sampleLen
)

func incompressible(in []byte) bool {
	if len(in) < minSampledSize {
		return false
	}
	fw := getFlate(flate.BestSpeed)
	defer putFlate(flate.BestSpeed, fw)
	var c countWriter
	fw.Reset(&c)
	mid := len(in) / 2
	if _, err := fw.Write(in[:sampleLen]); err != nil {
		return false
	}
	if _, err := fw.Write(in[mid : mid+sampleLen]); err != nil {
		return false
	}
	if err := fw.Close(); err != nil {
		return false
	}
	return c.n*100 >= 2*sampleLen*98
}

// countWriter counts what is written to it.
type countWriter struct{ n int }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += len(p)
	return len(p), nil
}
