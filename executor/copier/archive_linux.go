package copier

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/layer/gzchunk"
	"github.com/kiln-build/kiln/rooted"
)

// tryUnpack is ADD's local-archive rule (BuildKit solver/llbsolver/file
// unpack.go): a regular file whose content is a tar stream — plain, or
// compressed with gzip, bzip2, xz or zstd, detected by magic number as in
// moby/go-archive's DecompressStream, never by name — is extracted into
// dest, which is then a directory whatever its spelling. Anything else is
// not an archive and is copied as a file; it reports false.
func (c *copier) tryUnpack(srcPath, dest string) (bool, error) {
	srcRel, exists, err := c.src.r.Resolve(srcPath, true)
	if err != nil {
		return false, err
	}
	if !exists {
		// Not found is reported by the copy that follows.
		return false, nil
	}
	sd, name, err := c.src.r.Parent(srcRel)
	if err != nil || sd == nil {
		return false, nil
	}
	defer sd.Close()
	// Only a regular file can be an archive; a FIFO or device is never
	// opened to find out.
	f, err := sd.OpenRegular(name)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	r, closeFn := openTar(f)
	if r == nil {
		return false, nil
	}
	defer closeFn()

	root := c.droot
	destRel, _, err := root.Resolve(dest, true)
	if err != nil {
		return false, err
	}
	// The extraction directory takes 0755 and --chown; --chmod does not
	// apply to archives in BuildKit.
	d, err := root.MkdirAll(destRel, 0o755, func(d *rooted.Dir, name string) error {
		if c.chown == nil {
			return nil
		}
		return d.Lchown(name, c.chown.uid, c.chown.gid)
	})
	if err != nil {
		return false, err
	}
	defer d.Close()
	if err := extractTar(r, d, c.chown); err != nil {
		return false, fmt.Errorf("extracting %s: %w", strings.TrimPrefix(cleanRooted(srcPath), "/"), err)
	}
	return true, nil
}

// openTar returns the decompressed stream of f when f holds a (possibly
// compressed) tar archive, else nil. The bytes read to find the first
// header are replayed, so the stream starts at the archive's beginning.
func openTar(f *os.File) (io.Reader, func()) {
	br := bufio.NewReaderSize(f, 64<<10)
	magic, _ := br.Peek(10)
	var r io.Reader = br
	closeFn := func() {}
	switch {
	case bytes.HasPrefix(magic, []byte{0x42, 0x5A, 0x68}):
		r = bzip2.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0x1F, 0x8B, 0x08}):
		// Only Read touches br; the workers inflate members already
		// read, so nothing runs ahead on another thread.
		zr, err := gzchunk.NewReader(br)
		if err != nil {
			return nil, nil
		}
		r, closeFn = zr, func() { zr.Close() }
	case bytes.HasPrefix(magic, []byte{0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil
		}
		r = xr
	case isZstd(magic):
		// One decoder goroutine at most, and none running ahead: the
		// caller may rely on its thread's mount namespace.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil
		}
		r, closeFn = zr, zr.Close
	}
	rec := &recorder{r: r}
	if _, err := tar.NewReader(rec).Next(); err != nil {
		closeFn()
		return nil, nil
	}
	return io.MultiReader(bytes.NewReader(rec.buf), r), closeFn
}

// recorder keeps what is read through it (the first header's blocks).
type recorder struct {
	r   io.Reader
	buf []byte
}

func (rc *recorder) Read(p []byte) (int, error) {
	n, err := rc.r.Read(p)
	rc.buf = append(rc.buf, p[:n]...)
	return n, err
}

// isZstd matches a zstd frame or a skippable frame.
func isZstd(b []byte) bool {
	if bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return true
	}
	return len(b) >= 8 && binary.LittleEndian.Uint32(b[:4])&0xFFFFFFF0 == 0x184D2A50
}

// extractTar unpacks an archive into the directory dest the way BuildKit
// does — moby's go-archive Unpack chrooted at the destination — with
// kiln's one tar applier (its flattened-rootfs sink):
//   - entry names and hardlink targets are resolved inside dest ("../x"
//     and "/x" land at dest/x, symlinks already extracted are followed
//     inside dest), and every file is reached by descriptor from dest's
//     handle, so nothing escapes it, even through a directory the archive
//     replaces by a symlink before the final pass;
//   - the archive's own root entry "./" (or ".") is skipped: the existing
//     destination keeps its mode and owner (DESIGN item 4). go-archive
//     skips only a name that cleans to "."; an entry "/" (tar -P) is
//     merged onto the destination like any directory, and kiln does the
//     same because the image must be BuildKit's (checked against
//     buildkitd v0.34.2: "./" keeps a 0700 7:8 destination, "/" makes it
//     0777 0:0);
//   - .wh. names are ordinary files: go-archive's Unpack applies no
//     whiteouts unless asked;
//   - an existing entry is replaced, but an existing directory meets a
//     directory entry by taking its metadata;
//   - entries keep their uid/gid unless --chown is set; parents missing
//     from the archive are created 0755 root:root, but not through a
//     dangling symlink (an error, as in go-archive);
//   - modes include setuid/setgid/sticky, xattrs come from SCHILY.xattr.*
//     records (best effort), and directory attributes are set last.
func extractTar(r io.Reader, dest *rooted.Dir, chown *owner) error {
	root, err := rooted.NewRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	opts := layer.Options{
		Sink:             layer.Rootfs,
		LiteralWhiteouts: true,
		RootEntry:        true,
		LiteralParents:   true,
		BestEffortXattrs: true,
		ClampTimes:       true,
		LinkMeta:         true,
	}
	if chown != nil {
		opts.Owner = &layer.Owner{UID: chown.uid, GID: chown.gid}
	}
	a := layer.NewApplier(root, opts)
	defer a.Close()
	// The copier runs in a child of its own, which a cancelled build
	// kills: no context to watch here.
	if err := a.Apply(context.Background(), r); err != nil {
		return err
	}
	return a.Finish(root)
}
