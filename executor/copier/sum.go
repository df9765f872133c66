package copier

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"strconv"
	"syscall"
)

// Entry is one entry a COPY reads from its source, as the build cache
// hashes it: its in-root path and the digest of its Record.
type Entry struct {
	Path string `json:"p"`
	Sum  string `json:"s"`
}

// Record is the framed description of one selected entry, the unit of the
// build context checksum (docs/cache.md): path, type, mode, owner, and the
// content digest of a regular file (hex SHA-256 of its bytes), the target
// of a symlink or the device number of a device — never times. contexthash
// hashes the context with it before a COPY, and the copier with the bytes
// it actually copied, so the two can be compared.
func Record(rel string, fi fs.FileInfo, content, link string) []byte {
	st, _ := fi.Sys().(*syscall.Stat_t)
	var uid, gid uint32
	if st != nil {
		uid, gid = st.Uid, st.Gid
	}
	// The frames are built in one buffer and hashed at once: the same
	// bytes as Frame writes field by field, without a hash call and an
	// allocation per field (the context of a no-op rebuild hashes one
	// record per file).
	var stack [256]byte
	var num [32]byte
	b := AppendFrame(stack[:0], "path", rel)
	b = AppendFrame(b, "type", fi.Mode().Type().String())
	b = AppendFrame(b, "mode", string(strconv.AppendUint(num[:0], uint64(toBits(fi.Mode())), 8)))
	owner := strconv.AppendUint(num[:0], uint64(uid), 10)
	owner = append(owner, ':')
	owner = strconv.AppendUint(owner, uint64(gid), 10)
	b = AppendFrame(b, "owner", string(owner))
	switch {
	case fi.Mode().IsRegular():
		b = AppendFrame(b, "content", content)
	case fi.Mode()&fs.ModeSymlink != 0:
		b = AppendFrame(b, "link", link)
	case st != nil && fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		b = AppendFrame(b, "rdev", strconv.FormatUint(st.Rdev, 10))
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// appendFrame appends what Frame writes for name and value to b.
func AppendFrame(b []byte, name, value string) []byte {
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// EntrySum is the digest of a Record, as Entry.Sum holds it.
func EntrySum(rec []byte) string {
	s := sha256.Sum256(rec)
	return hex.EncodeToString(s[:])
}

// Frame writes a length-prefixed name and value, so that no two different
// sequences of fields hash alike.
func Frame(h hash.Hash, name, value string) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(name)))])
	io.WriteString(h, name)
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(value)))])
	io.WriteString(h, value)
}

// ContextChangedError reports a source entry whose bytes (or metadata)
// differ from what the step's cache key was computed from: the build
// context changed while the build ran.
type ContextChangedError struct {
	// Path is the entry, relative to the context ("src/main.go").
	Path string
}

func (e *ContextChangedError) Error() string {
	return fmt.Sprintf("the build context changed while it was being copied: %s; rerun the build", e.Path)
}

// verifier compares what the copier reads, entry by entry and in the
// order Select reports them, with the entries the key was computed from.
type verifier struct {
	expect []Entry
	i      int
}

// check records the next entry read; a difference is a
// *ContextChangedError naming the first entry that differs.
func (v *verifier) check(rel string, fi fs.FileInfo, content, link string) error {
	if v == nil {
		return nil
	}
	sum := EntrySum(Record(rel, fi, content, link))
	if v.i >= len(v.expect) {
		return &ContextChangedError{Path: relName(rel)}
	}
	e := v.expect[v.i]
	v.i++
	if e.Path != rel {
		// An entry appeared or vanished: name whichever sorts first.
		p := e.Path
		if rel < p {
			p = rel
		}
		return &ContextChangedError{Path: relName(p)}
	}
	if e.Sum != sum {
		return &ContextChangedError{Path: relName(rel)}
	}
	return nil
}

// done reports entries the key covered that the copy never read.
func (v *verifier) done() error {
	if v == nil || v.i >= len(v.expect) {
		return nil
	}
	return &ContextChangedError{Path: relName(v.expect[v.i].Path)}
}

func relName(rel string) string {
	if rel == "/" || rel == "" {
		return "."
	}
	return rel[1:]
}
