package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/export"
)

// outputMemo remembers what an archive output last received, so that a
// rebuild that changed nothing does not rewrite an identical archive (the
// archives are deterministic: same image and names, same bytes). The file
// counts as untouched while its size, mtime and inode are the ones kiln
// left; anything else rewrites it.
type outputMemo struct {
	path string // the memo file; "" when the output is not memoised
	dest string // the output file, absolute
	key  string // image digest, output spec and names
}

type memoRecord struct {
	Key   string `json:"key"` // image digest, output spec and names
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime"`
	Ino   uint64 `json:"ino"`
}

func exportMemo(root string, img v1.Image, out export.Output, names []string) outputMemo {
	if !out.Tar || out.Dest == "" || out.Dest == export.StdoutDest || (out.Type != "oci" && out.Type != "docker") {
		return outputMemo{}
	}
	abs, err := filepath.Abs(out.Dest)
	if err != nil {
		return outputMemo{}
	}
	dg, err := img.Digest()
	if err != nil {
		return outputMemo{}
	}
	attrs := make([]string, 0, len(out.Attrs))
	for k, v := range out.Attrs {
		attrs = append(attrs, k+"="+v)
	}
	sort.Strings(attrs)
	key := fmt.Sprintf("%s|%s|%s|%s", dg, out.Type, strings.Join(attrs, ","), strings.Join(names, ","))
	id := sha256.Sum256([]byte(abs))
	return outputMemo{
		path: filepath.Join(root, "outputs", hex.EncodeToString(id[:16])+".json"),
		dest: abs,
		key:  key,
	}
}

func statRecord(p string) (memoRecord, bool) {
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return memoRecord{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return memoRecord{}, false
	}
	return memoRecord{Size: fi.Size(), Mtime: fi.ModTime().UnixNano(), Ino: st.Ino}, true
}

// upToDate reports whether the output already holds exactly this image.
func (m outputMemo) upToDate() bool {
	if m.path == "" {
		return false
	}
	data, err := os.ReadFile(m.path)
	if err != nil {
		return false
	}
	var last memoRecord
	if json.Unmarshal(data, &last) != nil || last.Key != m.key {
		return false
	}
	cur, ok := statRecord(m.dest)
	return ok && cur.Size == last.Size && cur.Mtime == last.Mtime && cur.Ino == last.Ino
}

// record notes what was just written; failing to only costs a rewrite.
func (m outputMemo) record() {
	if m.path == "" {
		return
	}
	rec, ok := statRecord(m.dest)
	if !ok {
		return
	}
	rec.Key = m.key
	data, err := json.Marshal(rec)
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(m.path), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(m.path), ".memo-")
	if err != nil {
		return
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil && cerr == nil {
		err = os.Rename(tmp.Name(), m.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}
