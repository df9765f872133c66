package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/flate"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/layer/gzchunk"
	"github.com/kiln-build/kiln/trace"
)

// CommitDir turns dir, an overlay-format directory (a step's upper dir once
// the sandbox has removed its mount stubs), into a stored layer.
//
// It makes one streaming pass over dir: the layer tar is hashed for the
// diffID and gzip-compressed (deterministically: no name, zero mtime) into
// a blob whose hash is the digest, so each layer is compressed exactly once.
// dir itself then becomes the layer's fs/ directory: it must be on the
// store's filesystem (from TempDir). If the store already has a layer with
// the same diffID, that one is returned and the new copy discarded. If dir
// has no entries at all, CommitDir returns empty=true and stores nothing.
//
// On success dir is gone: moved into the store or removed. On error it is
// left for the caller to remove.
func (s *Store) CommitDir(ctx context.Context, dir string) (info LayerInfo, empty bool, err error) {
	return s.CommitDirWith(ctx, dir, layer.TarOptions{})
}

// CommitDirWith is CommitDir writing the layer tar with opt (a build under
// SOURCE_DATE_EPOCH clamps mtimes). Only the tar changes: fs/ keeps the
// files as the step left them.
func (s *Store) CommitDirWith(ctx context.Context, dir string, opt layer.TarOptions) (info LayerInfo, empty bool, err error) {
	empty, err = isEmptyDir(dir)
	if err != nil {
		return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, err)
	}
	if empty {
		if err := os.Remove(dir); err != nil {
			return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, err)
		}
		return LayerInfo{}, true, nil
	}
	// Checked up front so that a misplaced dir fails before minutes of
	// compression rather than at the final rename.
	if same, err := sameFilesystem(dir, s.tmp()); err != nil {
		return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, err)
	} else if !same {
		return LayerInfo{}, false, fmt.Errorf("committing %s: not on the store's filesystem (use Store.TempDir)", dir)
	}

	// The contents list (what kiln verify checks) is written from the
	// lstat of each entry the tar walk makes anyway. Durability comes
	// after publishing (durable.go).
	listed := make(chan error, 1)
	if syncInline() {
		go func() {
			_, span := trace.Start(ctx, "sync")
			listed <- syncFilesystem(dir) // no boot id to scope an unsynced publish by
			span.End()
		}()
	} else {
		listed <- nil
	}
	var list []byte
	opt.Entry = func(e layer.TreeEntry) error {
		list = appendContentsLine(list, e)
		return nil
	}
	_, tarSpan := trace.Start(ctx, "tar + compress")
	blob, err := s.compress(ctx, dir, opt)
	tarSpan.End()
	syncErr := <-listed
	if err != nil {
		return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, err)
	}
	defer blob.discard()
	if syncErr != nil {
		return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, syncErr)
	}

	if existing, ok, err := s.LayerByDiffID(blob.diffID); err != nil {
		return LayerInfo{}, false, err
	} else if ok {
		if err := os.RemoveAll(dir); err != nil {
			return LayerInfo{}, false, fmt.Errorf("discarding duplicate layer %s: %w", dir, err)
		}
		return existing, false, nil
	}

	info = LayerInfo{DiffID: blob.diffID, Digest: blob.digest, Size: blob.size, MediaType: types.OCILayer}
	_, pubSpan := trace.Start(ctx, "publish")
	defer pubSpan.End()
	if err := s.storeBlob(blob); err != nil {
		return LayerInfo{}, false, err
	}
	staging, err := os.MkdirTemp(s.tmp(), "layer-")
	if err != nil {
		return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, err)
	}
	if err := moveTree(dir, filepath.Join(staging, "fs")); err != nil {
		os.RemoveAll(staging)
		return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, err)
	}
	if err := os.Remove(dir); err != nil {
		os.RemoveAll(staging)
		return LayerInfo{}, false, fmt.Errorf("committing %s: %w", dir, err)
	}
	info, err = s.publishListed(staging, info, list)
	if err != nil {
		os.RemoveAll(staging)
		return LayerInfo{}, false, err
	}
	return info, false, nil
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return len(names) == 0, nil
}

// tempBlob is a complete, synced blob in ROOT/tmp, not yet in blobs/.
type tempBlob struct {
	path           string
	diffID, digest v1.Hash
	size           int64
}

// discard removes the temp file unless storeBlob has moved it.
func (b *tempBlob) discard() {
	if b.path != "" {
		os.Remove(b.path)
	}
}

// compress writes the tar of dir, gzipped, to a temp blob. WriteTar runs in
// its own goroutine through a pipe so that walking and reading files (and
// the diffID hash) overlap with compression, the slow part.
func (s *Store) compress(ctx context.Context, dir string, opt layer.TarOptions) (*tempBlob, error) {
	f, err := os.CreateTemp(s.tmp(), "blob-")
	if err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	blob := &tempBlob{path: f.Name()}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			blob.discard()
		}
	}()

	diffHash, digestHash := sha256.New(), sha256.New()
	// No buffer in front of the file: the chunked writer hands over whole
	// members (up to a MiB each), and a small layer is one write.
	counted := &countingWriter{w: io.MultiWriter(f, digestHash)}
	gz, err := newGzipWriter(counted, flate.DefaultCompression)
	if err != nil {
		return nil, err
	}

	pipe := newBufPipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe.CloseWithError(layer.WriteTarWith(ctx, dir, io.MultiWriter(pipe, diffHash), opt))
	}()
	_, err = pipe.WriteTo(gz)
	// Unblocks the writer if compression failed, and waits for it: dir
	// must not be walked once it is renamed or removed.
	pipe.CloseRead(errors.New("layer compression stopped"))
	<-done
	if err != nil {
		return nil, fmt.Errorf("writing layer tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}
	if syncInline() {
		if err := syncFile(f); err != nil {
			return nil, fmt.Errorf("syncing blob: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing blob: %w", err)
	}
	ok = true
	blob.diffID = sum(diffHash)
	blob.digest = sum(digestHash)
	blob.size = counted.n
	return blob, nil
}

// newGzipWriter is kiln's one gzip encoder for layers, so that a layer
// compressed by a commit and by a recompression to gzip give the same
// bytes for the same tar: kiln's chunked gzip (package gzchunk: fixed
// 1 MiB members, the given level, no name, a zero mtime), compressed on
// every core because compression is where a build spends its time
// (DESIGN.md), and inflated on every core by whoever pulls the layer
// with kiln — any other gzip reader reads it as a plain gzip stream.
func newGzipWriter(w io.Writer, level int) (*gzchunk.Writer, error) {
	gz, err := gzchunk.NewWriter(w, level)
	if err != nil {
		return nil, fmt.Errorf("starting gzip: %w", err)
	}
	return gz, nil
}

func sum(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// storeBlob moves a complete, verified blob into blobs/. It replaces an
// existing blob of the same digest rather than trusting it: that one may
// have been damaged on disk since, and a re-pull must be able to repair it.
// Readers that have the old file open keep reading it (rename(2) does not
// touch an open inode).
func (s *Store) storeBlob(b *tempBlob) error {
	final := s.blobPath(b.digest)
	if err := os.Rename(b.path, final); err != nil {
		return fmt.Errorf("storing blob %s: %w", b.digest, err)
	}
	b.path = ""
	if !syncInline() {
		s.published() // synced in the background (durable.go)
		return nil
	}
	if err := syncDir(s.blobDir()); err != nil {
		return fmt.Errorf("storing blob %s: %w", b.digest, err)
	}
	return nil
}

// publish makes staging (holding a complete fs/) the layer directory of
// info. info.json is written before the rename, so a layer directory that
// exists is complete; durable.go says when it is durable. If another
// process published the same layer first, staging is removed and their
// layer returned.
func (s *Store) publish(staging string, info LayerInfo) (LayerInfo, error) {
	return s.publishListed(staging, info, nil)
}

// publishListed is publish with the contents list of staging/fs already
// made (nil: publish makes it).
func (s *Store) publishListed(staging string, info LayerInfo, list []byte) (LayerInfo, error) {
	// The root of a lowerdir is / in the container when no upper layer
	// has it; the tar has no entry for it, so give it the usual mode.
	if err := os.Chmod(filepath.Join(staging, "fs"), 0o755); err != nil {
		return LayerInfo{}, fmt.Errorf("publishing layer %s: %w", info.DiffID, err)
	}
	// The contents list is what kiln verify checks fs/ against later;
	// it is written before info.json, which marks the layer complete.
	if list == nil {
		var err error
		if list, err = listContents(filepath.Join(staging, "fs")); err != nil {
			return LayerInfo{}, fmt.Errorf("publishing layer %s: %w", info.DiffID, err)
		}
	}
	// With a boot id, nothing is synced here: info.json names the boot
	// and the background syncer makes the layer durable (durable.go).
	mark := newMark()
	// staging is not in layers/ yet: its files are written in place.
	write := writeNew
	if mark == nil {
		write = s.writeAtomic
	}
	if err := write(filepath.Join(staging, contentsFile), list); err != nil {
		return LayerInfo{}, fmt.Errorf("publishing layer %s: %w", info.DiffID, err)
	}
	data, err := json.Marshal(infoFile{DiffID: info.DiffID, Digest: info.Digest, Size: info.Size, MediaType: info.MediaType, Unsynced: mark})
	if err != nil {
		return LayerInfo{}, fmt.Errorf("publishing layer %s: %w", info.DiffID, err)
	}
	if err := write(filepath.Join(staging, "info.json"), append(data, '\n')); err != nil {
		return LayerInfo{}, fmt.Errorf("publishing layer %s: %w", info.DiffID, err)
	}
	final := s.layerDir(info.DiffID)
	if err := os.Rename(staging, final); err != nil {
		// rename(2) of a directory onto a non-empty one fails: someone
		// else committed this layer first. Theirs is as good as ours.
		if errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY) {
			if err := os.RemoveAll(staging); err != nil {
				return LayerInfo{}, fmt.Errorf("discarding duplicate layer %s: %w", info.DiffID, err)
			}
			theirs, ok, err := s.LayerByDiffID(info.DiffID)
			if err != nil {
				return LayerInfo{}, err
			}
			if !ok {
				return LayerInfo{}, fmt.Errorf("publishing layer %s: %s exists but has no info.json", info.DiffID, final)
			}
			return theirs, nil
		}
		return LayerInfo{}, fmt.Errorf("publishing layer %s: %w", info.DiffID, err)
	}
	if mark != nil {
		s.published()
	} else if err := syncDir(s.layersDir()); err != nil {
		return LayerInfo{}, fmt.Errorf("publishing layer %s: %w", info.DiffID, err)
	}
	info.Dir = filepath.Join(final, "fs")
	return info, nil
}

// moveTree moves the tree at dir to dst, a new directory with dir's
// owner, times and extended attributes (its mode is the one publish
// gives every layer root), by renaming dir's entries into it; dir is left
// empty. Not dir itself: a RUN step's upper dir is
// committed while its sandbox's overlay may still be coming down, and
// overlayfs marks an upper dir's inode in use until then (a later
// step's overlay would have it as a lower dir, which overlayfs warns
// about in the kernel log). The entries carry no such mark. The caller
// removes dir.
func moveTree(dir, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(dir, n), filepath.Join(dst, n)); err != nil {
			return err
		}
	}
	copyXattrs(dir, dst)
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// copyXattrs copies what it can of the extended attributes of src to
// dst, directories: a layer's root has no entry in its tar, so they are
// kept for kiln verify and the overlay's view only, and a security
// module may refuse to set its own.
func copyXattrs(src, dst string) {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		return
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(src, buf); err != nil {
		return
	}
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		if name == "" {
			continue
		}
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, n)
		if n, err = unix.Lgetxattr(src, name, val); err == nil {
			unix.Lsetxattr(dst, name, val[:n], 0)
		}
	}
}
