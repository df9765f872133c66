package copier

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// bufPool holds the 1 MiB buffers archive extraction copies through.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// tryUnpack is ADD's local-archive rule (BuildKit solver/llbsolver/file
// unpack.go): a regular file whose content is a tar stream — plain, or
// compressed with gzip, bzip2, xz or zstd, detected by magic number as in
// moby/go-archive's DecompressStream, never by name — is extracted into
// dest, which is then a directory whatever its spelling. Anything else is
// not an archive and is copied as a file; it reports false.
func (c *copier) tryUnpack(srcPath, dest string) (bool, error) {
	srcRel, err := resolveIn(c.src, srcPath, true)
	if err != nil {
		return false, err
	}
	fi, err := c.src.lstat(srcRel)
	if err != nil || !fi.Mode().IsRegular() {
		// Not found is reported by the copy that follows.
		return false, nil
	}
	f, err := os.Open(c.src.host(srcRel))
	if err != nil {
		return false, nil
	}
	defer f.Close()
	tr, first, closeFn := openTar(f)
	if tr == nil {
		return false, nil
	}
	defer closeFn()

	destRel, err := resolveIn(c.dst, dest, true)
	if err != nil {
		return false, err
	}
	// The extraction directory takes 0755 and --chown; --chmod does not
	// apply to archives in BuildKit.
	if err := mkdirAll(c.dst, destRel, 0o755, c.chown); err != nil {
		return false, err
	}
	if err := extractTar(tr, first, c.dst.host(destRel), c.chown); err != nil {
		return false, fmt.Errorf("extracting %s: %w", strings.TrimPrefix(cleanRooted(srcPath), "/"), err)
	}
	return true, nil
}

// openTar returns a tar reader positioned after the first header when f
// holds a (possibly compressed) tar archive, else nil.
func openTar(f *os.File) (*tar.Reader, *tar.Header, func()) {
	br := bufio.NewReaderSize(f, 64<<10)
	magic, _ := br.Peek(10)
	var r io.Reader = br
	closeFn := func() {}
	switch {
	case bytes.HasPrefix(magic, []byte{0x42, 0x5A, 0x68}):
		r = bzip2.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0x1F, 0x8B, 0x08}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, nil
		}
		r, closeFn = zr, func() { zr.Close() }
	case bytes.HasPrefix(magic, []byte{0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil, nil
		}
		r = xr
	case isZstd(magic):
		// One decoder goroutine at most, and none running ahead: the
		// caller may rely on its thread's mount namespace.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil, nil
		}
		r, closeFn = zr, zr.Close
	}
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		closeFn()
		return nil, nil, nil
	}
	return tr, hdr, closeFn
}

// isZstd matches a zstd frame or a skippable frame.
func isZstd(b []byte) bool {
	if bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return true
	}
	return len(b) >= 8 && binary.LittleEndian.Uint32(b[:4])&0xFFFFFFF0 == 0x184D2A50
}

// extractTar unpacks an archive into root the way BuildKit does — moby's
// go-archive Unpack chrooted at the destination:
//   - entry names and hardlink targets are resolved inside root ("../x" and
//     "/x" land at root/x, symlinks already extracted are followed inside
//     root), so nothing escapes it;
//   - the archive's own root entry "./" (or ".") is skipped: the existing
//     destination keeps its mode and owner (DESIGN item 4). go-archive
//     skips only a name that cleans to "."; an entry "/" (tar -P) is
//     merged onto the destination like any directory, and kiln does the
//     same because the image must be BuildKit's (checked against
//     buildkitd v0.34.2: "./" keeps a 0700 7:8 destination, "/" makes it
//     0777 0:0);
//   - an existing entry is replaced, but an existing directory meets a
//     directory entry by taking its metadata;
//   - entries keep their uid/gid unless --chown is set; parents missing
//     from the archive are created 0755 root:root;
//   - modes include setuid/setgid/sticky, xattrs come from SCHILY.xattr.*
//     records, and directory times are set last.
func extractTar(tr *tar.Reader, hdr *tar.Header, root string, chown *owner) error {
	t := dirTree(root)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	type dirTime struct {
		host string
		hdr  *tar.Header
	}
	var dirs []dirTime
	for ; ; hdr = nil {
		if hdr == nil {
			var err error
			if hdr, err = tr.Next(); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("reading archive: %w", err)
			}
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if path.Clean(hdr.Name) == "." {
			continue
		}
		name := cleanRooted(hdr.Name)
		host, err := extractEntry(t, tr, hdr, name, chown, *bp)
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{host, hdr})
		}
	}
	for _, d := range dirs {
		if err := setHeaderTimes(d.host, d.hdr, false); err != nil {
			return err
		}
	}
	return nil
}

// extractEntry writes one archive entry and returns its host path.
func extractEntry(t dirTree, tr *tar.Reader, hdr *tar.Header, name string, chown *owner, buf []byte) (string, error) {
	if name == "/" {
		// "/" or "..": the destination itself, which exists as a
		// directory. Replacing it, as go-archive would for a
		// non-directory, would delete the destination: refuse.
		if hdr.Typeflag != tar.TypeDir {
			return "", fmt.Errorf("refusing to replace the destination directory with a non-directory")
		}
		return t.host("/"), applyHeader(t.host("/"), hdr, chown, "")
	}
	// Parents the archive does not list are created 0755 root:root. Like
	// go-archive, look at the parent itself without following it: a
	// symlink there (even dangling) counts as present and is followed by
	// the create below.
	dir := path.Dir(name)
	literal, err := resolveIn(t, dir, false)
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(t.host(literal)); isNotExist(err) {
		if err := mkdirAll(t, literal, 0o755, &owner{}); err != nil {
			return "", err
		}
	}
	parent, err := resolveIn(t, dir, true)
	if err != nil {
		return "", err
	}
	host := t.host(path.Join(parent, path.Base(name)))

	if fi, err := os.Lstat(host); err == nil {
		if !fi.IsDir() || hdr.Typeflag != tar.TypeDir {
			if err := os.RemoveAll(host); err != nil {
				return "", err
			}
		}
	}

	var linkHost string
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := os.Lstat(host); err != nil || !fi.IsDir() {
			if err := os.Mkdir(host, 0o700); err != nil {
				return "", err
			}
		}
	case tar.TypeReg:
		f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return "", err
		}
		if _, err := io.CopyBuffer(f, tr, buf); err != nil {
			f.Close()
			return "", err
		}
		if err := f.Close(); err != nil {
			return "", err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		m := uint32(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeChar:
			m |= unix.S_IFCHR
		case tar.TypeBlock:
			m |= unix.S_IFBLK
		default:
			m |= unix.S_IFIFO
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknod(host, m, int(dev)); err != nil {
			return "", &fs.PathError{Op: "mknod", Path: host, Err: err}
		}
	case tar.TypeLink:
		target := cleanRooted(hdr.Linkname)
		tparent, err := resolveIn(t, path.Dir(target), true)
		if err != nil {
			return "", err
		}
		linkHost = t.host(path.Join(tparent, path.Base(target)))
		if err := os.Link(linkHost, host); err != nil {
			return "", err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, host); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("unhandled tar header type %d", hdr.Typeflag)
	}

	return host, applyHeader(host, hdr, chown, linkHost)
}

// applyHeader gives an extracted entry the owner, xattrs, mode and times
// of its header; linkHost is the target of a hardlink entry.
func applyHeader(host string, hdr *tar.Header, chown *owner, linkHost string) error {
	uid, gid := hdr.Uid, hdr.Gid
	if chown != nil {
		uid, gid = chown.uid, chown.gid
	}
	if err := os.Lchown(host, uid, gid); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(host, key, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
				continue
			}
			return &fs.PathError{Op: "setxattr " + key, Path: host, Err: err}
		}
	}

	// A hardlink to a symlink shares the symlink's inode: no mode or times.
	linkToSymlink := false
	if hdr.Typeflag == tar.TypeLink {
		fi, err := os.Lstat(linkHost)
		linkToSymlink = err != nil || fi.Mode()&fs.ModeSymlink != 0
	}
	if hdr.Typeflag != tar.TypeSymlink && !linkToSymlink {
		if err := unix.Chmod(host, uint32(hdr.Mode)&0o7777); err != nil {
			return &fs.PathError{Op: "chmod", Path: host, Err: err}
		}
	}
	if !linkToSymlink {
		if err := setHeaderTimes(host, hdr, hdr.Typeflag == tar.TypeSymlink); err != nil {
			return err
		}
	}
	return nil
}

// setHeaderTimes applies an entry's times like go-archive: the access time
// is the later of atime and mtime, and times outside what a timespec holds
// become the Unix epoch.
func setHeaderTimes(host string, hdr *tar.Header, symlink bool) error {
	mtime := boundTime(hdr.ModTime)
	atime := hdr.AccessTime
	if atime.Before(hdr.ModTime) {
		atime = hdr.ModTime
	}
	atime = boundTime(atime)
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	flags := 0
	if symlink {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, host, ts, flags); err != nil {
		return &fs.PathError{Op: "utimes", Path: host, Err: err}
	}
	return nil
}

func boundTime(t time.Time) time.Time {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(0, 1<<63-1)) {
		return time.Unix(0, 0)
	}
	return t
}
