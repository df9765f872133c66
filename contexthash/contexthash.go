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

	mu    sync.Mutex
	memo  map[string]memoEntry
	dirty bool
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
	id := sha256.Sum256([]byte(abs))
	h := &Hasher{dir: abs, memoPath: filepath.Join(memoDir, hex.EncodeToString(id[:16])+".memo"), memo: map[string]memoEntry{}}
	if data, err := os.ReadFile(h.memoPath); err == nil {
		h.memo = decodeMemo(data) // a damaged memo is ignored
	}
	return h, nil
}

// Checksum hashes what a COPY of sources (as written, after .dockerignore
// excludes) reads from the context.
func (h *Hasher) Checksum(sources, excludes []string) (string, []Entry, error) {
	total := sha256.New()
	var entries []Entry
	idx := -1
	last := ""
	err := copier.SelectAt(h.dir, sources, excludes, func(source, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error {
		if source != last || idx < 0 {
			idx++
			last = source
			copier.Frame(total, "source", source)
		}
		rec, err := h.record(rel, fi, dir, name)
		if err != nil {
			return err
		}
		copier.Frame(total, "entry", string(rec))
		entries = append(entries, Entry{Path: rel, Sum: copier.EntrySum(rec)})
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	return hex.EncodeToString(total.Sum(nil)), entries, nil
}

// record is the framed description of one entry (copier.Record, the
// same the copier computes over what it copies). The entry is read
// through its parent directory's handle: no path is resolved again.
func (h *Hasher) record(rel string, fi fs.FileInfo, dir *rooted.Dir, name string) ([]byte, error) {
	st, _ := fi.Sys().(*syscall.Stat_t)
	content, link := "", ""
	switch {
	case fi.Mode().IsRegular():
		sum, err := h.fileSum(rel, fi, st, dir, name)
		if err != nil {
			return nil, err
		}
		content = sum
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := dir.Readlink(name)
		if err != nil {
			return nil, fmt.Errorf("hashing context: %w", err)
		}
		link = target
	}
	return copier.Record(rel, fi, content, link), nil
}

// fileSum returns the file's content digest, from the memo when its stat is
// unchanged.
func (h *Hasher) fileSum(rel string, fi fs.FileInfo, st *syscall.Stat_t, dir *rooted.Dir, name string) (string, error) {
	var key memoEntry
	if st != nil {
		key = memoEntry{Size: fi.Size(), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino}
	}
	h.mu.Lock()
	m, ok := h.memo[rel]
	h.mu.Unlock()
	if ok && st != nil && m.Size == key.Size && m.Mtime == key.Mtime && m.Ctime == key.Ctime && m.Ino == key.Ino {
		return m.Sum, nil
	}
	f, err := dir.OpenRegular(name)
	if err != nil {
		return "", fmt.Errorf("hashing context file %s: %w", rel, err)
	}
	defer f.Close()
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return "", fmt.Errorf("hashing context file %s: %w", rel, err)
	}
	key.Sum = hex.EncodeToString(d.Sum(nil))
	if st != nil {
		h.mu.Lock()
		h.memo[rel] = key
		h.dirty = true
		h.mu.Unlock()
	}
	return key.Sum, nil
}

// Save writes the memo back, atomically; failing to save only costs time
// on the next build.
func (h *Hasher) Save() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty {
		return nil
	}
	data := encodeMemo(h.memo)
	if err := os.MkdirAll(filepath.Dir(h.memoPath), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(h.memoPath), ".memo-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), h.memoPath)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	h.dirty = false
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
	m := map[string]memoEntry{}
	s := string(data)
	if !strings.HasPrefix(s, memoHeader) {
		return m
	}
	s = s[len(memoHeader):]
	for len(s) > 0 {
		line, rest, _ := strings.Cut(s, "\n")
		s = rest
		f := strings.SplitN(line, " ", 6)
		if len(f) != 6 {
			return map[string]memoEntry{}
		}
		var e memoEntry
		var err error
		e.Sum = f[0]
		if e.Size, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			return map[string]memoEntry{}
		}
		if e.Mtime, err = strconv.ParseInt(f[2], 10, 64); err != nil {
			return map[string]memoEntry{}
		}
		if e.Ctime, err = strconv.ParseInt(f[3], 10, 64); err != nil {
			return map[string]memoEntry{}
		}
		if e.Ino, err = strconv.ParseUint(f[4], 10, 64); err != nil {
			return map[string]memoEntry{}
		}
		m[f[5]] = e
	}
	return m
}
