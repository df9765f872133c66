package layer

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// Writing a regular file costs the kernel far more than reading its tar
// entry: allocating an inode (on a journal-less ext4 that means scanning
// past recently deleted ones) and copying the bytes into the page cache.
// The LayerDir sink therefore hands regular files to a few writer
// goroutines: the tar loop resolves the parent directory as before (by
// descriptor, one component at a time, no symlink followed), reads the
// contents into pooled buffers and queues the file; a writer creates it
// in that verified directory handle, writes it and sets its attributes
// through the open descriptor. Everything else (directories, links,
// whiteouts, removals) stays in the tar loop, in tar order.
//
// Order is kept by one rule: while a file is queued or being written,
// nothing else touches its path or anything below it. Before an entry
// acts, the tar loop waits for every queued file its path (or hardlink
// target) runs through or names; anything that removes a tree, and every
// whiteout or opaque marker, waits for all of them, and so does the end of
// Apply. A writer that finds its name taken (by something from before
// this tar, or a directory this tar made) waits for the files queued
// before its own, then replaces it as the tar loop would; when that was a
// directory, the tar loop forgets its cached handles before the next
// entry. Nothing here follows a symlink: a file is created with O_EXCL
// and O_NOFOLLOW in a handle the tar loop verified.
//
// The tar loop holds at most maxChunks buffers (8 MiB) in flight, and
// about as much stays allocated for the next unpack.

const (
	// chunkMax is the largest buffer one queued piece of a file takes.
	chunkMax = 256 << 10
	// maxChunks bounds the buffers in flight (at most 8 MiB).
	maxChunks = 32
	// maxQueued bounds the files queued and not yet written.
	maxQueued = 256
)

// freeChunks keep buffers of 4 KiB << 2i, up to chunkMax, between files
// and between unpacks: a sync.Pool would hand them to the collector at
// every cycle, and a fresh buffer costs page faults and zeroing. Only one
// Apply has writers at a time, so maxChunks of each size is enough.
var freeChunks = [4]chan []byte{
	make(chan []byte, maxChunks), make(chan []byte, maxChunks),
	make(chan []byte, maxChunks), make(chan []byte, maxChunks),
}

func chunkClass(n int) int {
	if n <= 4<<10 {
		return 0
	}
	return (bits.Len(uint(n-1)) - 12 + 1) / 2
}

func getChunk(n int) []byte {
	c := chunkClass(n)
	select {
	case b := <-freeChunks[c]:
		return b[:n]
	default:
		return make([]byte, n, 4<<10<<(2*c))
	}
}

func putChunk(b []byte) {
	c := chunkClass(cap(b))
	if cap(b) != 4<<10<<(2*c) {
		return
	}
	select {
	case freeChunks[c] <- b[:cap(b)]:
	default:
	}
}

// fileJob is one regular file handed to a writer.
type fileJob struct {
	seq    uint64
	dir    *dirRef // held until the job is done
	name   string  // in dir
	p      string  // rooted path, the key in pending
	hdr    *tar.Header
	chunks chan []byte // the contents, closed after the last piece
	// aborted is set by the tar loop when it stopped before the last
	// piece: the writer leaves the file as it is.
	aborted atomic.Bool
}

// writers is the pool of file writers of one Apply.
type writers struct {
	a     *Applier
	ctx   context.Context
	jobs  chan *fileJob
	slots chan struct{} // one token per buffer in flight
	wg    sync.WaitGroup
	seq   uint64

	mu   sync.Mutex
	cond sync.Cond
	// pending holds the files queued and not done, by rooted path.
	pending map[string]*fileJob
	npend   atomic.Int32
	// err is the failure of the earliest failed job (errSeq).
	err    error
	errSeq uint64
	failed atomic.Bool
	// dirRemoved is set when a writer replaced a directory by its file:
	// handles the tar loop keeps below it name a deleted directory now.
	dirRemoved atomic.Bool
}

func writerCount() int {
	return min(max(runtime.GOMAXPROCS(0), 2), 4)
}

// writersBusy is held by the one Apply that has writers. Measured on two
// cores, the writers cut a lone unpack's wall time by a third and cost
// about a tenth more CPU (hand-offs, buffers crossing cores): worth it
// while a core would otherwise idle, not when several layers unpack side
// by side (a pull does three at once) and every core is busy anyway.
var writersBusy atomic.Bool

// takeWriters says whether this Apply may have writers: more than one
// core, and no other Apply in the process has them.
func takeWriters() bool {
	return runtime.GOMAXPROCS(0) > 1 && writersBusy.CompareAndSwap(false, true)
}

func newWriters(ctx context.Context, a *Applier) *writers {
	w := &writers{
		a: a, ctx: ctx,
		jobs:    make(chan *fileJob, maxQueued),
		slots:   make(chan struct{}, maxChunks),
		pending: map[string]*fileJob{},
	}
	w.cond.L = &w.mu
	n := writerCount()
	w.wg.Add(n)
	for range n {
		go w.run()
	}
	return w
}

// stop ends the writers once every queued file is done.
func (w *writers) stop() {
	close(w.jobs)
	w.wg.Wait()
}

func (w *writers) run() {
	defer w.wg.Done()
	for j := range w.jobs {
		err := w.write(j)
		if errors.Is(err, errAborted) {
			err = nil // the tar loop has the reason
		} else if err != nil {
			err = fmt.Errorf("%s: %w", j.hdr.Name, err)
		}
		j.dir.release()
		w.mu.Lock()
		delete(w.pending, j.p)
		w.npend.Add(-1)
		if err != nil && (w.err == nil || j.seq < w.errSeq) {
			w.err, w.errSeq = err, j.seq
			w.failed.Store(true)
		}
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

var errAborted = errors.New("applying stopped")

// drain takes the rest of j's contents back into the pools.
func (w *writers) drain(j *fileJob) {
	for b := range j.chunks {
		putChunk(b)
		<-w.slots
	}
}

// write creates j's file, writes it and sets its attributes. It does what
// Applier.writeFile does in the tar loop.
func (w *writers) write(j *fileJob) error {
	defer w.drain(j)
	if w.failed.Load() || w.ctx.Err() != nil {
		return errAborted
	}
	d := j.dir.d
	fd, err := w.a.createFile(d, j.name)
	if errors.Is(err, fs.ErrExist) {
		// Something from before is in the way. Nothing later in the tar
		// touches this path while the job is pending, but files queued
		// earlier may sit below it: wait for them, then replace as the tar
		// loop would.
		w.waitEarlier(j.seq)
		if st, lerr := d.Lstat(j.name); lerr == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			w.dirRemoved.Store(true)
		}
		if err = d.RemoveAll(j.name); err == nil {
			fd, err = w.a.createFile(d, j.name)
		}
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for b := range j.chunks {
		if err == nil {
			if _, werr := (fdWriter(fd)).Write(b); werr != nil {
				err = d.Err("write", j.name, werr)
			}
		}
		putChunk(b)
		<-w.slots
	}
	if err != nil {
		return err
	}
	if j.aborted.Load() {
		return errAborted
	}
	return w.a.fileMeta(fd, d, j.name, j.hdr)
}

// waitEarlier waits until no job queued before seq is pending.
func (w *writers) waitEarlier(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		earlier := false
		for _, j := range w.pending {
			if j.seq < seq {
				earlier = true
				break
			}
		}
		if !earlier {
			return
		}
		w.cond.Wait()
	}
}

// wait waits for every queued file and returns the first failure.
func (w *writers) wait() error {
	if w.npend.Load() > 0 {
		w.mu.Lock()
		for len(w.pending) > 0 {
			w.cond.Wait()
		}
		w.mu.Unlock()
	}
	return w.error()
}

// error is the failure of the earliest failed job, if any.
func (w *writers) error() error {
	if !w.failed.Load() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// waitFor waits for the queued files p names or runs through: p itself
// and each of its parents ("/a/b/c": "/a/b/c", "/a/b", "/a").
func (w *writers) waitFor(p string) {
	if w.npend.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.blocks(p) {
		w.cond.Wait()
	}
}

func (w *writers) blocks(p string) bool {
	for q := p; len(q) > 1; {
		if _, ok := w.pending[q]; ok {
			return true
		}
		i := len(q) - 1
		for i > 0 && q[i] != '/' {
			i--
		}
		q = q[:i]
	}
	return false
}

// queue hands the regular file name in d (rooted path p) to a writer,
// reading its contents from r.
func (w *writers) queue(ctx context.Context, d *dirRef, name, p string, hdr *tar.Header, r io.Reader) error {
	w.seq++
	j := &fileJob{seq: w.seq, dir: d.acquire(), name: name, p: p, hdr: hdr, chunks: make(chan []byte, 4)}
	w.mu.Lock()
	w.pending[p] = j
	w.npend.Add(1)
	w.mu.Unlock()
	w.jobs <- j
	defer close(j.chunks)
	for left := hdr.Size; left > 0; {
		if err := ctx.Err(); err != nil {
			j.aborted.Store(true)
			return err
		}
		n := int(min(left, chunkMax))
		w.slots <- struct{}{}
		b := getChunk(n)
		if _, err := io.ReadFull(r, b); err != nil {
			putChunk(b)
			<-w.slots
			j.aborted.Store(true)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		j.chunks <- b
		left -= int64(n)
	}
	return nil
}

// dirRef is a directory handle shared by the walker's chain and the
// writers: the last to let go closes it.
type dirRef struct {
	d    *rooted.Dir
	refs atomic.Int32
	root bool // the root's own handle: the root closes it
}

func newDirRef(d *rooted.Dir) *dirRef {
	r := &dirRef{d: d}
	r.refs.Store(1)
	return r
}

func (r *dirRef) acquire() *dirRef {
	if !r.root {
		r.refs.Add(1)
	}
	return r
}

func (r *dirRef) release() {
	if !r.root && r.refs.Add(-1) == 0 {
		r.d.Close()
	}
}

// fileMeta gives the open regular file fd (name in d) the entry's owner,
// mode, xattrs and times. chown first: it clears setuid/setgid and file
// capabilities, so the mode and the xattrs come after it.
func (a *Applier) fileMeta(fd int, d *rooted.Dir, name string, hdr *tar.Header) error {
	uid, gid := a.owner(hdr)
	if err := a.chownErr(unix.Fchown(fd, uid, gid)); err != nil {
		return a.ownerErr(d, name, uid, gid, err)
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return d.Err("chmod", name, err)
	}
	err := a.setXattrs(hdr, false, func(k string, v []byte) error {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil {
			return d.Err("setxattr "+k, name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Through the descriptor: no second lookup of name. Closing the file
	// later changes no time.
	ts := [2]unix.Timespec{rooted.Timespec(a.atime(hdr)), rooted.Timespec(a.mtime(hdr))}
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); errno != 0 {
		return d.Err("utimes", name, errno)
	}
	return nil
}
