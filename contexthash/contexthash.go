// Package contexthash computes the content checksum of what a COPY selects
// from the build context: relative path, type, mode, owner, link target and
// file bytes — never mtimes. File digests are remembered across builds by
// (path, size, mtime, ctime, inode), so an unchanged context is only
// lstat'ed, never read again.
package contexthash

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/rooted"
)

// Hasher hashes selections of one context directory.
type Hasher struct {
	dir      string // the context, absolute
	memoPath string

	// loaded is closed once the memo has been read: Open reads it in the
	// background, so that it overlaps resolving the base image.
	loaded chan struct{}

	mu         sync.Mutex
	memo       map[string]memoEntry
	dirty      bool
	prefetched map[string]*prefetch // by sources and excludes
}

// prefetch is a Checksum started before it was asked for.
type prefetch struct {
	done    chan struct{}
	sum     string
	entries []Entry
	err     error
}

// memoEntry is a remembered file digest and the stat it is valid for.
type memoEntry struct {
	Size  int64  `json:"s"`
	Mtime int64  `json:"m"`
	Ctime int64  `json:"c"`
	Ino   uint64 `json:"i"`
	Sum   string `json:"d"`
}

// Entry is one hashed path, for explaining cache misses.
type Entry struct {
	Path string
	Sum  string // digest of the entry's framed record
}

// Open returns a hasher for contextDir whose memo lives in memoDir (under
// kiln's store). A missing or unreadable memo just means files are read.
func Open(memoDir, contextDir string) (*Hasher, error) {
	abs, err := filepath.Abs(contextDir)
	if err != nil {
		return nil, fmt.Errorf("hashing context %s: %w", contextDir, err)
	}
	memoPath, err := memoFile(memoDir, abs)
	if err != nil {
		return nil, fmt.Errorf("hashing context %s: %w", contextDir, err)
	}
	h := &Hasher{dir: abs, memoPath: memoPath, memo: map[string]memoEntry{}, loaded: make(chan struct{})}
	go func() {
		defer close(h.loaded)
		if data, err := os.ReadFile(h.memoPath); err == nil {
			m := decodeMemo(data) // a damaged memo is ignored
			h.mu.Lock()
			h.memo = m
			h.mu.Unlock()
		}
	}()
	return h, nil
}

// The walk hands its entries to workers in batches: a batch is flushed at
// batchEntries entries, or earlier once it holds batchFiles open files to
// read, which bounds the descriptors a cold context keeps open.
const (
	batchEntries = 256
	batchFiles   = 16
)

// item is one selected entry on its way from the walk to the total.
type item struct {
	source    string
	newSource bool // first entry of its source: the total frames the source
	rel       string
	fi        fs.FileInfo
	key       memoEntry // the file's stat, and its digest once known
	keyed     bool      // key holds a stat the memo can remember
	f         *os.File  // a file the memo does not know: read by a worker
	link      string
	rec       []byte
	sum       string // copier.EntrySum(rec)
	err       error
}

type batch struct {
	items []item
	done  chan struct{} // closed when every item has its record
}

// Prefetch starts hashing sources in the background, so that a build
// hashes its context while it resolves its base image: the next Checksum
// of the same sources and excludes returns this result. The context is
// hashed a little earlier, as if the build had started then; a COPY still
// checks that it reads exactly what was hashed.
func (h *Hasher) Prefetch(sources, excludes []string) {
	key := prefetchKey(sources, excludes, copier.Selection{})
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.prefetched[key]; ok {
		return
	}
	if h.prefetched == nil {
		h.prefetched = map[string]*prefetch{}
	}
	p := &prefetch{done: make(chan struct{})}
	h.prefetched[key] = p
	go func() {
		defer close(p.done)
		p.sum, p.entries, p.err = h.checksum(sources, excludes, copier.Selection{})
	}()
}

// prefetchKey frames sources and excludes into one map key.
func prefetchKey(sources, excludes []string, sel copier.Selection) string {
	var b []byte
	for _, e := range sel.Excludes {
		b = copier.AppendFrame(b, "copy-exclude", e)
	}
	if sel.Parents {
		b = copier.AppendFrame(b, "parents", "")
	}
	for _, s := range sources {
		b = copier.AppendFrame(b, "source", s)
	}
	for _, e := range excludes {
		b = copier.AppendFrame(b, "exclude", e)
	}
	return string(b)
}

// Checksum hashes what a COPY of sources (as written, after .dockerignore
// excludes) reads from the context.
func (h *Hasher) Checksum(sources, excludes []string) (string, []Entry, error) {
	return h.ChecksumWith(sources, excludes, copier.Selection{})
}

// ChecksumWith is Checksum for a COPY with --exclude or --parents (sel).
func (h *Hasher) ChecksumWith(sources, excludes []string, sel copier.Selection) (string, []Entry, error) {
	h.mu.Lock()
	p := h.prefetched[prefetchKey(sources, excludes, sel)]
	h.mu.Unlock()
	if p != nil {
		<-p.done
		if p.err == nil {
			return p.sum, p.entries, nil
		}
		// hashed again, so that the error is this call's own
	}
	return h.checksum(sources, excludes, sel)
}

// checksum hashes what Checksum asks for.
//
// The walk only lstats, looks up the memo and opens the files it has to
// read; workers (one per CPU) read those and compute the entries'
// records, and the records are framed into the total in the walk's
// order: an unchanged context costs one lstat per entry, spread over the
// cores, and a changed one is read by every core.
func (h *Hasher) checksum(sources, excludes []string, sel copier.Selection) (string, []Entry, error) {
	<-h.loaded
	workers := runtime.GOMAXPROCS(0)
	work := make(chan *batch, workers)
	ordered := make(chan *batch, 1024)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, readBuf)
			for b := range work {
				h.records(b, buf)
				close(b.done)
			}
		}()
	}
	total := sha256.New()
	var entries []Entry
	var firstErr error
	framed := make(chan struct{})
	go func() {
		defer close(framed)
		var buf []byte
		for b := range ordered {
			<-b.done
			buf = buf[:0]
			for i := range b.items {
				it := &b.items[i]
				if it.err != nil {
					if firstErr == nil {
						firstErr = it.err
					}
					continue
				}
				if it.newSource {
					buf = copier.AppendFrame(buf, "source", it.source)
				}
				buf = copier.AppendFrame(buf, "entry", string(it.rec))
				entries = append(entries, Entry{Path: it.rel, Sum: it.sum})
			}
			total.Write(buf)
		}
	}()

	cur := &batch{done: make(chan struct{})}
	files := 0
	flush := func() {
		if len(cur.items) == 0 {
			return
		}
		ordered <- cur
		work <- cur
		cur = &batch{items: make([]item, 0, batchEntries), done: make(chan struct{})}
		files = 0
	}
	last := ""
	first := true
	walkErr := copier.SelectAtWith(h.dir, sources, excludes, sel, func(source, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error {
		it := item{source: source, newSource: first || source != last, rel: rel, fi: fi}
		first, last = false, source
		if err := h.prepare(&it, dir, name); err != nil {
			return err
		}
		if it.f != nil {
			files++
		}
		cur.items = append(cur.items, it)
		if len(cur.items) >= batchEntries || files >= batchFiles {
			flush()
		}
		return nil
	})
	flush()
	close(work)
	close(ordered)
	wg.Wait()
	<-framed
	if walkErr != nil {
		return "", nil, walkErr
	}
	if firstErr != nil {
		return "", nil, firstErr
	}
	return hex.EncodeToString(total.Sum(nil)), entries, nil
}

// prepare does, for one entry, what needs its parent directory's handle
// (valid only during the walk's callback): a symlink's target, and the
// opening of a file whose digest the memo does not know. The entry is
// read through that handle: no path is resolved again.
func (h *Hasher) prepare(it *item, dir *rooted.Dir, name string) error {
	switch {
	case it.fi.Mode().IsRegular():
		st, _ := it.fi.Sys().(*syscall.Stat_t)
		if st != nil {
			it.key = memoEntry{Size: it.fi.Size(), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino}
			it.keyed = true
			h.mu.Lock()
			m, ok := h.memo[it.rel]
			h.mu.Unlock()
			if ok && m.Size == it.key.Size && m.Mtime == it.key.Mtime && m.Ctime == it.key.Ctime && m.Ino == it.key.Ino {
				it.key.Sum = m.Sum
				return nil
			}
		}
		f, err := dir.OpenRegular(name)
		if err != nil {
			return fmt.Errorf("hashing context file %s: %w", it.rel, err)
		}
		it.f = f
	case it.fi.Mode()&fs.ModeSymlink != 0:
		target, err := dir.Readlink(name)
		if err != nil {
			return fmt.Errorf("hashing context: %w", err)
		}
		it.link = target
	}
	return nil
}

// readBuf is each worker's read buffer: most context files fit in one
// read, and a buffer per worker rather than per file (io.Copy's) keeps a
// cold hash of 10,000 files off the garbage collector.
const readBuf = 256 << 10

// hashFile writes the rest of f to d through buf.
func hashFile(d io.Writer, f io.Reader, buf []byte) error {
	for {
		n, err := f.Read(buf)
		d.Write(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// records reads the files of b the memo did not know, remembers their
// digests, and computes each entry's framed description (copier.Record,
// the same the copier computes over what it copies).
func (h *Hasher) records(b *batch, buf []byte) {
	for i := range b.items {
		it := &b.items[i]
		if it.f != nil {
			d := sha256.New()
			err := hashFile(d, it.f, buf)
			it.f.Close()
			it.f = nil
			if err != nil {
				it.err = fmt.Errorf("hashing context file %s: %w", it.rel, err)
				continue
			}
			it.key.Sum = hex.EncodeToString(d.Sum(nil))
			if it.keyed {
				h.mu.Lock()
				h.memo[it.rel] = it.key
				h.dirty = true
				h.mu.Unlock()
			}
		}
		it.rec = copier.Record(it.rel, it.fi, it.key.Sum, it.link)
		it.sum = copier.EntrySum(it.rec)
	}
}

// Save writes the memo back, atomically; failing to save only costs time
// on the next build.
func (h *Hasher) Save() error {
	<-h.loaded
	h.mu.Lock()
	pending := make([]*prefetch, 0, len(h.prefetched))
	for _, p := range h.prefetched {
		pending = append(pending, p)
	}
	h.mu.Unlock()
	for _, p := range pending {
		<-p.done // what it read goes into the memo too
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty {
		return nil
	}
	if err := writeMemo(h.memoPath, h.memo); err != nil {
		return err
	}
	h.dirty = false
	return nil
}

// writeMemo replaces the memo at memoPath, atomically.
func writeMemo(memoPath string, memo map[string]memoEntry) error {
	data := encodeMemo(memo)
	if err := os.MkdirAll(filepath.Dir(memoPath), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(memoPath), ".memo-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), memoPath)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// The memo is a line per file — "sum size mtime ctime inode path" — which
// a no-op rebuild of a 10,000-file context reads in a few milliseconds
// (JSON took 20).
const memoHeader = "kiln-contexthash-v1\n"

func encodeMemo(m map[string]memoEntry) []byte {
	var b strings.Builder
	b.WriteString(memoHeader)
	for p, e := range m {
		if strings.ContainsAny(p, "\n") {
			continue // such a file is simply read again next time
		}
		fmt.Fprintf(&b, "%s %d %d %d %d %s\n", e.Sum, e.Size, e.Mtime, e.Ctime, e.Ino, p)
	}
	return []byte(b.String())
}

func decodeMemo(data []byte) map[string]memoEntry {
	s := string(data)
	if !strings.HasPrefix(s, memoHeader) {
		return map[string]memoEntry{}
	}
	s = s[len(memoHeader):]
	// Sized once and cut field by field, without a slice per line: a
	// no-op rebuild reads the memo of every file of the context.
	m := make(map[string]memoEntry, strings.Count(s, "\n"))
	for len(s) > 0 {
		line, rest, _ := strings.Cut(s, "\n")
		s = rest
		var e memoEntry
		var f [5]string
		for i := range f {
			var ok bool
			if f[i], line, ok = strings.Cut(line, " "); !ok {
				return map[string]memoEntry{}
			}
		}
		var err [4]error
		e.Sum = f[0]
		e.Size, err[0] = strconv.ParseInt(f[1], 10, 64)
		e.Mtime, err[1] = strconv.ParseInt(f[2], 10, 64)
		e.Ctime, err[2] = strconv.ParseInt(f[3], 10, 64)
		e.Ino, err[3] = strconv.ParseUint(f[4], 10, 64)
		if err != [4]error{} {
			return map[string]memoEntry{}
		}
		m[line] = e
	}
	return m
}
