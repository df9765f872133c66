package gzchunk

import (
	"bufio"
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
)

// Reader decompresses a gzip stream, inflating kiln's members on
// GOMAXPROCS workers. Everything it reads from the underlying reader is
// read in the caller's Read calls, never by another goroutine, and it
// reads no further than klauspost's gzip.Reader would once the stream has
// been read to io.EOF (which is its end: trailing bytes that are not a
// member are an error). The workers only inflate bytes already read.
type Reader struct {
	src *bufio.Reader
	in  *source // under src; takes bytes back when a member is replayed

	// queue holds the members read ahead, in stream order.
	queue []*rjob
	depth int
	// streamNext: the next member in src (after queue) is not one to
	// read whole, and is decoded by streaming once queue is drained.
	streamNext bool
	srcDone    bool // src ended cleanly after the members in queue

	gz        *gzip.Reader  // reads the header of a member that is streamed
	stream    *memberStream // inflates its deflate data
	streaming bool          // stream is in the middle of a member

	out    []byte // what the last verified member holds and Read has not returned
	outBuf []byte // out's whole buffer, for the pool

	jobs     chan *rjob
	workers  sync.WaitGroup
	nworkers int
	closed   atomic.Bool
	err      error // sticky, io.EOF included

	parallel int // members inflated by the workers (for tests)
}

// rjob is one member read whole, to be inflated by a worker.
type rjob struct {
	raw  []byte
	out  []byte
	ok   bool // inflated, ended at the trailer, CRC and size match
	done chan struct{}
}

// NewReader starts decompressing r. As with klauspost's gzip.NewReader, it
// reads the first member's header and fails if that is not gzip (io.EOF
// for an empty r). Close must be called to stop the workers; it does not
// close r.
func NewReader(r io.Reader) (*Reader, error) {
	in := &source{r: r}
	z := &Reader{
		in:    in,
		src:   bufio.NewReaderSize(in, 64<<10),
		depth: 2 * runtime.GOMAXPROCS(0),
	}
	hdr, _ := z.src.Peek(headerLen)
	if _, ok := memberLen(hdr); !ok {
		if err := z.startStream(); err != nil {
			return nil, err
		}
	}
	return z, nil
}

// Read reads decompressed bytes, in order.
func (z *Reader) Read(p []byte) (int, error) {
	for {
		if len(z.out) > 0 {
			n := copy(p, z.out)
			z.out = z.out[n:]
			if len(z.out) == 0 {
				putOut(z.outBuf)
				z.out, z.outBuf = nil, nil
			}
			return n, nil
		}
		if z.err != nil {
			return 0, z.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if z.streaming {
			n, err := z.stream.Read(p)
			if err == io.EOF {
				// The member ended and checked out; the next is
				// looked at afresh.
				z.streaming = false
				err = z.endStream()
				if err == nil && n == 0 {
					continue
				}
			}
			if err != nil {
				z.err = err
			}
			return n, err
		}
		z.fill()
		if len(z.queue) == 0 {
			switch {
			case z.streamNext:
				z.streamNext = false
				if err := z.startStream(); err != nil {
					z.err = err // io.EOF: no member follows
				}
			case z.srcDone:
				z.err = io.EOF
			}
			continue
		}
		j := z.queue[0]
		<-j.done
		if !j.ok {
			z.replay()
			continue
		}
		z.queue[0] = nil
		z.queue = z.queue[1:]
		putRaw(j.raw)
		z.parallel++
		z.out, z.outBuf = j.out, j.out
		if len(z.out) == 0 {
			putOut(z.outBuf)
			z.outBuf = nil
		}
	}
}

// fill reads members whole from src into the queue, up to depth of them,
// stopping at the end of src or at a member that is to be streamed.
func (z *Reader) fill() {
	for !z.srcDone && !z.streamNext && len(z.queue) < z.depth {
		hdr, err := z.src.Peek(headerLen)
		if len(hdr) == 0 && err == io.EOF {
			z.srcDone = true
			return
		}
		n, ok := memberLen(hdr)
		if !ok {
			z.streamNext = true
			return
		}
		raw := getRaw(n)
		if got, err := io.ReadFull(z.src, raw); err != nil {
			// Truncated (or failing): the streaming decoder reports it
			// exactly as it would have.
			z.unread(raw[:got])
			z.streamNext = true
			return
		}
		z.dispatch(&rjob{raw: raw, done: make(chan struct{})})
	}
}

// dispatch queues j and hands it to a worker, starting one more worker
// (up to GOMAXPROCS) with each of the first members: a one-member layer
// starts one.
func (z *Reader) dispatch(j *rjob) {
	if z.jobs == nil {
		z.jobs = make(chan *rjob, z.depth)
	}
	if z.nworkers < runtime.GOMAXPROCS(0) {
		z.nworkers++
		z.workers.Add(1)
		go z.work()
	}
	z.queue = append(z.queue, j)
	z.jobs <- j
}

// replay puts the bytes of the members in queue back in front of src and
// streams the first of them: its length, deflate end, CRC or size did not
// check out, and the streaming decoder makes of it (and of what follows,
// whatever its framing really is) exactly what klauspost's reader makes.
func (z *Reader) replay() {
	raws := make([][]byte, len(z.queue))
	for i, j := range z.queue {
		raws[i] = j.raw // a worker may still be reading it: never reused
	}
	z.queue = nil
	z.unread(raws...)
	z.srcDone = false
	z.streamNext = true
}

// unread puts bs, in order, in front of what src has not yet returned.
func (z *Reader) unread(bs ...[]byte) {
	buffered, _ := z.src.Peek(z.src.Buffered())
	pending := make([][]byte, 0, len(bs)+1+len(z.in.pending))
	pending = append(pending, bs...)
	pending = append(pending, bytes.Clone(buffered))
	pending = append(pending, z.in.pending...)
	z.in.pending = pending
	z.src.Reset(z.in)
}

// startStream reads the header of the member at src and starts decoding
// it by streaming.
func (z *Reader) startStream() error {
	if z.gz == nil {
		z.gz = new(gzip.Reader)
	}
	if err := z.gz.Reset(z.src); err != nil {
		return err
	}
	// The header is read (klauspost's reader stops right after it); the
	// deflate data is ours to decode.
	if z.stream == nil {
		z.stream = newMemberStream(z.src)
	} else {
		z.stream.reset(z.src)
	}
	z.streaming = true
	return nil
}

// endStream puts back what the member stream read past its deflate data
// and checks the trailer as klauspost's reader does.
func (z *Reader) endStream() error {
	z.unread(bytes.Clone(z.stream.rest()))
	var trailer [trailerLen]byte
	if _, err := io.ReadFull(z.src, trailer[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if le.Uint32(trailer[:4]) != z.stream.crc || le.Uint32(trailer[4:]) != z.stream.size {
		return gzip.ErrChecksum
	}
	return nil
}

// work inflates queued members until the Reader is closed.
func (z *Reader) work() {
	defer z.workers.Done()
	f := getInflater()
	for j := range z.jobs {
		if !z.closed.Load() {
			f.member(j)
		}
		close(j.done)
	}
	inflaterPool.Put(f)
}

// member decodes member j.raw into j.out. j.ok says whether the member is
// exactly what its header claims: its deflate data ends at its trailer,
// whose CRC-32 and size match the output.
func (f *inflater) member(j *rjob) {
	// The decoder is fuzzed against klauspost's, but a bug in it must
	// never take the process down: the member is streamed instead, as
	// any member that does not check out (where a panic fails the layer).
	defer func() {
		if recover() != nil {
			j.out, j.ok = nil, false
		}
	}()
	trailer := j.raw[len(j.raw)-trailerLen:]
	size := int(le.Uint32(trailer[4:]))
	if size > maxMember {
		return
	}
	buf := getOut(size + copySlack)
	out, ok := f.inflate(buf, j.raw[headerLen:len(j.raw)-trailerLen], size)
	if !ok {
		putOut(buf)
		return
	}
	j.out = out
	j.ok = le.Uint32(trailer) == crc32.ChecksumIEEE(out)
}

// Close stops the workers and waits for them. It does not close the
// underlying reader (which may have been read ahead of what Read
// returned, unless the stream was read to its end).
func (z *Reader) Close() error {
	if z.closed.Swap(true) {
		return nil
	}
	if z.jobs != nil {
		close(z.jobs)
		z.workers.Wait()
	}
	z.queue, z.out = nil, nil
	if z.stream != nil {
		z.stream.release()
		z.stream = nil
	}
	if z.err == nil {
		z.err = errReaderClosed
	}
	return nil
}

var errReaderClosed = errors.New("gzchunk: read from a closed reader")

// source is the reader under src: bytes put back (replayed) first, then
// the underlying reader.
type source struct {
	pending [][]byte
	r       io.Reader
}

func (s *source) Read(p []byte) (int, error) {
	for len(s.pending) > 0 {
		if len(s.pending[0]) == 0 {
			s.pending = s.pending[1:]
			continue
		}
		n := copy(p, s.pending[0])
		s.pending[0] = s.pending[0][n:]
		return n, nil
	}
	return s.r.Read(p)
}

var rawPool sync.Pool

// getRaw returns a buffer of n bytes for a member read whole.
func getRaw(n int) []byte {
	if b, ok := rawPool.Get().(*[]byte); ok {
		if cap(*b) >= n {
			return (*b)[:n]
		}
		rawPool.Put(b)
	}
	if n > 64<<10 {
		return make([]byte, n, max(n, outCap))
	}
	return make([]byte, n)
}

// putRaw pools the buffers of members of a sizable layer, whatever their
// compressed size; those of a small one are left to the collector.
func putRaw(b []byte) {
	if cap(b) >= outCap && cap(b) <= maxMember {
		rawPool.Put(&b)
	}
}
