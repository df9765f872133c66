package layer

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// WriteTar writes the overlay-format directory dir as an uncompressed layer
// tar to w. Only dir is walked: it is the diff (an upper dir), never a merged
// tree.
//
// The output is deterministic, so the same tree always yields the same
// diffID: entries come depth-first with the names of each directory in byte
// order, paths are relative ("a/b", directories "a/"), owners are numeric
// only, and mtimes are whole seconds. Whiteout devices become .wh.NAME,
// opaque directories are followed by DIR/.wh..wh..opq, the second and later
// paths of a hardlinked inode become hardlinks to the first, and sockets are
// left out. The root directory itself has no entry.
func WriteTar(ctx context.Context, dir string, w io.Writer) error {
	return WriteTarWith(ctx, dir, w, TarOptions{})
}

// WriteTarWith is WriteTar with options: with a ClampMtime, the layer of a
// build under SOURCE_DATE_EPOCH.
func WriteTarWith(ctx context.Context, dir string, w io.Writer, opt TarOptions) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	tw := tar.NewWriter(bw)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	tb := &tarWriter{
		root:    dir,
		tw:      tw,
		links:   make(map[inode]string),
		buf:     *bp,
		clamp:   opt.ClampMtime,
		onEntry: opt.Entry,
	}
	if err := tb.dir(ctx, ""); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("closing tar of %s: %w", dir, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing tar of %s: %w", dir, err)
	}
	return nil
}

type inode struct{ dev, ino uint64 }

type tarWriter struct {
	root    string
	tw      *tar.Writer
	links   map[inode]string // first path seen of each multiply-linked inode
	buf     []byte           // file copy buffer
	xbuf    []byte           // xattr name list buffer
	clamp   *time.Time       // latest mtime written, if any
	onEntry func(TreeEntry) error
}

// child is a directory entry, lstat'ed before sorting because a whiteout's
// place in the output is decided by its tar name, .wh.NAME.
type child struct {
	name    string // on disk
	tarName string // base name in the tar
	st      unix.Stat_t
}

// dir writes the entries below the directory rel ("" is the root), each
// directory's own entry before its children.
func (t *tarWriter) dir(ctx context.Context, rel string) error {
	full := filepath.Join(t.root, rel)
	f, err := os.Open(full)
	if err != nil {
		return fmt.Errorf("opening directory %s: %w", full, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close() // before recursing, so deep trees do not pile up descriptors
	if err != nil {
		return fmt.Errorf("reading directory %s: %w", full, err)
	}
	children := make([]child, len(names))
	for i, name := range names {
		c := &children[i]
		c.name, c.tarName = name, name
		p := filepath.Join(full, name)
		if err := unix.Lstat(p, &c.st); err != nil {
			return fmt.Errorf("inspecting %s: %w", p, &os.PathError{Op: "lstat", Path: p, Err: err})
		}
		if isWhiteout(&c.st) {
			c.tarName = WhiteoutPrefix + name
		}
	}
	slices.SortFunc(children, func(a, b child) int { return strings.Compare(a.tarName, b.tarName) })
	for i := range children {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := t.entry(ctx, rel, &children[i]); err != nil {
			return err
		}
	}
	return nil
}

// isWhiteout recognises an overlay whiteout: a character device 0:0.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func (t *tarWriter) entry(ctx context.Context, parent string, c *child) error {
	rel := joinRel(parent, c.name)
	full := filepath.Join(t.root, rel)
	st := &c.st
	mtime := time.Unix(st.Mtim.Sec, 0)
	if t.clamp != nil && mtime.After(*t.clamp) {
		mtime = *t.clamp
	}
	typ := st.Mode & unix.S_IFMT
	var link string
	if typ == unix.S_IFLNK {
		var err error
		if link, err = os.Readlink(full); err != nil {
			return fmt.Errorf("reading symlink %s: %w", full, err)
		}
	}
	if t.onEntry != nil {
		if err := t.onEntry(TreeEntry{Path: rel, Mode: rooted.FileMode(st.Mode), UID: st.Uid, GID: st.Gid, Size: st.Size, Rdev: st.Rdev, Link: link}); err != nil {
			return err
		}
	}

	// Since Linux 5.8 overlayfs makes whiteouts by linking one shared
	// device, so they must be handled before hardlinks.
	if isWhiteout(st) {
		return t.header(&tar.Header{
			Typeflag: tar.TypeReg,
			Name:     joinRel(parent, c.tarName),
			ModTime:  mtime,
		}, full)
	}
	if strings.HasPrefix(c.name, WhiteoutPrefix) {
		// A real file named like a whiteout would be read back as a
		// deletion; refusing is better than a silently different image.
		return fmt.Errorf("writing %s: names starting with %s are reserved for whiteouts", full, WhiteoutPrefix)
	}
	if typ == unix.S_IFSOCK {
		return nil // a socket cannot be archived; tar tools skip them too
	}

	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: mtime,
	}
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		key := inode{dev: st.Dev, ino: st.Ino}
		if first, ok := t.links[key]; ok {
			// The first entry carries the inode's contents and xattrs.
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			return t.header(hdr, full)
		}
		t.links[key] = rel
	}
	opaque, err := t.xattrs(full, hdr)
	if err != nil {
		return err
	}

	switch typ {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name = rel + "/"
		if err := t.header(hdr, full); err != nil {
			return err
		}
		if opaque {
			if err := t.header(&tar.Header{
				Typeflag: tar.TypeReg,
				Name:     rel + "/" + OpaqueMarker,
				ModTime:  mtime,
			}, full); err != nil {
				return err
			}
		}
		return t.dir(ctx, rel)
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
		if err := t.header(hdr, full); err != nil {
			return err
		}
		return t.contents(ctx, full, st.Size)
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = link
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if typ == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return fmt.Errorf("writing %s: unknown file type %#o", full, typ)
	}
	return t.header(hdr, full)
}

func (t *tarWriter) header(hdr *tar.Header, full string) error {
	if err := t.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing tar header for %s: %w", full, err)
	}
	return nil
}

// contents streams size bytes of the file. A file that changes size while
// it is read would corrupt the archive, so that is an error, not a shrug.
func (t *tarWriter) contents(ctx context.Context, full string, size int64) error {
	// A raw descriptor rather than os.File: for thousands of small files
	// the poller registration and extra fcntl of os.OpenFile cost more
	// than the read itself.
	fd, err := unix.Open(full, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", full, &os.PathError{Op: "open", Path: full, Err: err})
	}
	defer unix.Close(fd)
	n, err := copyBuffer(ctx, t.tw, fdReader(fd), size, t.buf)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", full, err)
	}
	if n != size {
		return fmt.Errorf("archiving %s: file shrank from %d to %d bytes while being read", full, size, n)
	}
	return nil
}

type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), p)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// xattrs adds the layer's extended attributes of full to hdr as PAX records
// and reports whether full is an opaque directory.
func (t *tarWriter) xattrs(full string, hdr *tar.Header) (opaque bool, err error) {
	names, err := t.listXattrs(full)
	if err != nil {
		return false, err
	}
	for _, name := range names {
		switch name {
		case opaqueXattr():
			v, err := getXattr(full, name)
			if err != nil {
				return false, err
			}
			opaque = string(v) == "y"
			continue
		case "trusted.overlay.redirect", "trusted.overlay.metacopy":
			// The data or the children live in a lower layer: a tar of
			// the upper dir alone would be wrong.
			return false, fmt.Errorf("writing %s: overlay %s is not supported (mount with redirect_dir=off,metacopy=off)", full, name)
		}
		if !keepXattr(name) {
			continue
		}
		v, err := getXattr(full, name)
		if err != nil {
			return false, err
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = make(map[string]string)
		}
		hdr.PAXRecords[paxXattr+name] = string(v)
	}
	return opaque, nil
}

func (t *tarWriter) listXattrs(full string) ([]string, error) {
	if len(t.xbuf) == 0 {
		t.xbuf = make([]byte, 1024) // a nil buffer would only ask for the size
	}
	for {
		n, err := unix.Llistxattr(full, t.xbuf)
		if errors.Is(err, unix.ERANGE) {
			size, err := unix.Llistxattr(full, nil)
			if err != nil {
				return nil, fmt.Errorf("listing xattrs of %s: %w", full, err)
			}
			t.xbuf = make([]byte, size+64)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing xattrs of %s: %w", full, err)
		}
		if n == 0 {
			return nil, nil
		}
		var names []string
		for _, name := range strings.Split(string(t.xbuf[:n]), "\x00") {
			if name != "" {
				names = append(names, name)
			}
		}
		return names, nil
	}
}

func getXattr(full, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(full, name, buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := unix.Lgetxattr(full, name, nil)
			if err != nil {
				return nil, fmt.Errorf("reading xattr %s of %s: %w", name, full, err)
			}
			buf = make([]byte, size+64)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, full, err)
		}
		return buf[:n], nil
	}
}

func joinRel(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "/" + name
}
