package source

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path"
	"sync"

	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/rooted"
)

// scanChunk is the size of the pooled copies the scan gets; a larger
// read gets a buffer of its own.
const scanChunk = 128 << 10

// scanQueue bounds the copies waiting for the scan (about 2 MiB).
const scanQueue = 16

var scanBufs = sync.Pool{New: func() any {
	b := make([]byte, scanChunk)
	return &b
}}

// scanEntries returns a reader of tr's bytes that also hands a copy of
// them to a second tar reader, running on another goroutine, which calls
// check (if not nil) with each header and, when sums is not nil, records
// there the SHA-256 of each regular file's bytes by rooted path (see
// recordSum). The copies queue (a few MiB at most), so the scan runs on
// another core while the caller unpacks, and the unpacking reads no file
// back to hash it.
//
// wait, called once the returned reader is done with, ends the scan and
// returns check's error (or the archive's); sums is complete then. An
// error of the scan fails a later read, so the unpacking stops soon
// after the entry (whatever it wrote meanwhile stays inside its root).
func scanEntries(tr io.Reader, check func(*tar.Header) error, sums map[string]contexthash.FileSum) (io.Reader, func() error) {
	t := &scanTee{r: tr, chunks: make(chan *[]byte, scanQueue), failed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		cr := &chunkReader{ch: t.chunks}
		err := scan(cr, check, sums)
		if err != nil {
			t.err = err
			close(t.failed)
		}
		// the padding after the end-of-archive marker, or the rest of a
		// failed archive: the tee must never block on it
		for b := range t.chunks {
			putScanBuf(b)
		}
	}()
	return t, func() error {
		close(t.chunks)
		<-done
		return t.err
	}
}

// scan reads the archive from r, as the unpacking does.
func scan(r io.Reader, check func(*tar.Header) error, sums map[string]contexthash.FileSum) error {
	hr := tar.NewReader(r)
	rec := &sumRecorder{sums: sums, symlinks: map[string]bool{}}
	for {
		hdr, err := hr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(hdr); err != nil {
				return err
			}
		}
		if sums != nil {
			if err := rec.record(hdr, hr); err != nil {
				return err
			}
		}
	}
}

// sumRecorder keeps the digest of what each rooted path holds as the
// archive's entries are applied in order: a regular file its bytes'; a
// hardlink its target's at that point; anything else none. A hardlink
// whose target lies below one of the archive's symlinks records nothing,
// and an entry that does empties the record for good: where the applier
// put it depends on the link (a context docker build sends has no such
// entry; kiln serve refuses them). A path whose record is stale (a
// directory replaced, and what was below it gone) holds no regular file
// of that size afterwards, which contexthash.Seed checks.
type sumRecorder struct {
	sums     map[string]contexthash.FileSum
	symlinks map[string]bool // every symlink the archive made, even if replaced since
	buf      []byte
	off      bool // an entry went through a symlink: nothing is recorded
}

func (s *sumRecorder) record(hdr *tar.Header, r io.Reader) error {
	name := rooted.Clean(hdr.Name)
	if name == "/" || hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	if s.off {
		return nil
	}
	if s.belowSymlink(name) {
		// Where the applier put it depends on the symlink: it may have
		// replaced any file recorded so far.
		clear(s.sums)
		s.off = true
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		if s.buf == nil {
			s.buf = make([]byte, 64<<10)
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, r, s.buf)
		if err != nil {
			return err
		}
		s.sums[name] = contexthash.FileSum{Size: n, Sum: hex.EncodeToString(h.Sum(nil))}
	case tar.TypeLink:
		target := rooted.Clean(hdr.Linkname)
		if sum, ok := s.sums[target]; ok && !s.belowSymlink(target) {
			s.sums[name] = sum
		} else if target != name {
			delete(s.sums, name)
		}
	case tar.TypeSymlink:
		s.symlinks[name] = true
		delete(s.sums, name)
	default:
		delete(s.sums, name)
	}
	return nil
}

func (s *sumRecorder) belowSymlink(name string) bool {
	if len(s.symlinks) == 0 {
		return false
	}
	for p := path.Dir(name); p != "/" && p != "."; p = path.Dir(p) {
		if s.symlinks[p] {
			return true
		}
	}
	return false
}

// scanTee is the reader scanEntries returns.
type scanTee struct {
	r      io.Reader
	chunks chan *[]byte
	failed chan struct{} // closed once err is set
	err    error
}

func (t *scanTee) Read(p []byte) (int, error) {
	select {
	case <-t.failed:
		return 0, t.err
	default:
	}
	n, err := t.r.Read(p)
	if n > 0 {
		var b *[]byte
		if n <= scanChunk {
			b = scanBufs.Get().(*[]byte)
			*b = (*b)[:n]
		} else {
			nb := make([]byte, n)
			b = &nb
		}
		copy(*b, p[:n])
		select {
		case t.chunks <- b:
		case <-t.failed:
			putScanBuf(b)
			return n, t.err
		}
	}
	return n, err
}

func putScanBuf(b *[]byte) {
	if cap(*b) == scanChunk {
		*b = (*b)[:scanChunk]
		scanBufs.Put(b)
	}
}

// chunkReader reads the chunks of a scanTee in order.
type chunkReader struct {
	ch  <-chan *[]byte
	cur *[]byte
	off int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.cur == nil || c.off == len(*c.cur) {
		if c.cur != nil {
			putScanBuf(c.cur)
			c.cur = nil
		}
		b, ok := <-c.ch
		if !ok {
			return 0, io.EOF
		}
		c.cur, c.off = b, 0
	}
	n := copy(p, (*c.cur)[c.off:])
	c.off += n
	return n, nil
}
