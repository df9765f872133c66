package cache

import (
	"errors"
	"io"
	"sync"
)

// bufPipe is an io.Pipe with slack: the writer fills 256 KiB slices and
// queues up to bufPipeSlots of them, so that the tar walk (reading files,
// hashing the diffID) and the compressor (its queue, the blob write and
// its digest) each run at their own pace instead of in lockstep.
type bufPipe struct {
	ch   chan []byte
	cur  []byte // the writer's slice being filled
	pool sync.Pool

	mu    sync.Mutex
	werr  error         // why the writer stopped (io.EOF: it finished)
	rerr  error         // why the reader stopped
	done  chan struct{} // closed when the reader stops
	left  []byte        // the reader's unread rest of slice
	slice []byte
}

const (
	bufPipeSlice = 256 << 10
	bufPipeSlots = 16
)

func newBufPipe() *bufPipe {
	p := &bufPipe{ch: make(chan []byte, bufPipeSlots), done: make(chan struct{})}
	p.pool.New = func() any { b := make([]byte, 0, bufPipeSlice); return &b }
	return p
}

// Write copies b into slices and queues the full ones.
func (p *bufPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if p.cur == nil {
			p.cur = (*p.pool.Get().(*[]byte))[:0]
		}
		c := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+c]
		b = b[c:]
		n += c
		if len(p.cur) == cap(p.cur) {
			if err := p.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (p *bufPipe) send() error {
	select {
	case p.ch <- p.cur:
		p.cur = nil
		return nil
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.rerr
	}
}

// CloseWithError ends the writer's side: the reader gets what was
// written, then err (io.EOF for nil).
func (p *bufPipe) CloseWithError(err error) {
	if err == nil {
		err = io.EOF
	}
	if len(p.cur) > 0 {
		if serr := p.send(); serr != nil && err == io.EOF {
			err = serr
		}
	}
	p.mu.Lock()
	p.werr = err
	p.mu.Unlock()
	close(p.ch)
}

// WriteTo hands the queued slices to w as they come, then returns the
// writer's error (nil when it finished): io.Copy uses it, with no copy in
// between.
func (p *bufPipe) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for s := range p.ch {
		c, err := w.Write(s)
		n += int64(c)
		s = s[:0]
		p.pool.Put(&s)
		if err != nil {
			return n, err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.werr == io.EOF {
		return n, nil
	}
	return n, p.werr
}

// Read is WriteTo for a reader that wants bytes.
func (p *bufPipe) Read(b []byte) (int, error) {
	if len(p.left) == 0 {
		if p.slice != nil {
			s := p.slice[:0]
			p.pool.Put(&s)
			p.slice = nil
		}
		s, ok := <-p.ch
		if !ok {
			p.mu.Lock()
			defer p.mu.Unlock()
			return 0, p.werr
		}
		p.slice, p.left = s, s
	}
	n := copy(b, p.left)
	p.left = p.left[n:]
	return n, nil
}

// CloseRead stops the reader: a blocked or later Write fails with err.
func (p *bufPipe) CloseRead(err error) {
	p.mu.Lock()
	if p.rerr == nil {
		if err == nil {
			err = errors.New("read side closed")
		}
		p.rerr = err
		close(p.done)
	}
	p.mu.Unlock()
}
