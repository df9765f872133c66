package client

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/rooted"
)

// WriteContext writes the context s describes to w as an uncompressed
// tar: the entries kiln build's COPY would see after .dockerignore (the
// same walker, by directory handle through package rooted), then
// s.Extra. Entries follow kiln's layer conventions: relative names,
// directories with a trailing slash, numeric owners, whole-second
// mtimes, hardlinks to the first path of an inode, image xattrs as PAX
// records; sockets are left out.
func WriteContext(ctx context.Context, w io.Writer, s ContextSpec) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	tw := tar.NewWriter(bw)
	excludes := s.Excludes
	if len(excludes) > 0 {
		excludes = append([]string(nil), excludes...)
		for _, k := range s.Keep {
			excludes = append(excludes, "!"+k)
		}
	}
	cw := &contextWriter{ctx: ctx, tw: tw, links: map[[2]uint64]string{}}
	err := copier.SelectAt(s.Dir, []string{"."}, excludes, cw.entry)
	if err != nil {
		return fmt.Errorf("archiving the build context %s: %w", s.Dir, err)
	}
	dirs := map[string]bool{}
	for _, e := range s.Extra {
		name := path.Clean(e.Name)
		for d := path.Dir(name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
				return fmt.Errorf("archiving %s: %w", e.Name, err)
			}
		}
		mode := e.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: int64(len(e.Data)), ModTime: time.Unix(0, 0)}); err != nil {
			return fmt.Errorf("archiving %s: %w", e.Name, err)
		}
		if _, err := tw.Write(e.Data); err != nil {
			return fmt.Errorf("archiving %s: %w", e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archiving the build context %s: %w", s.Dir, err)
	}
	return bw.Flush()
}

type contextWriter struct {
	ctx   context.Context
	tw    *tar.Writer
	links map[[2]uint64]string // (dev, ino) → first name, of multiply linked files
}

func (c *contextWriter) entry(_, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if rel == "/" || dir == nil {
		return nil // the root has no entry, as in a layer
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("archiving %s: no stat", rel)
	}
	tarName := strings.TrimPrefix(rel, "/")
	hdr := &tar.Header{
		Name:    tarName,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
	}
	typ := st.Mode & syscall.S_IFMT
	if typ != syscall.S_IFDIR && st.Nlink > 1 {
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if first, ok := c.links[key]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return c.header(hdr, rel)
		}
		c.links[key] = tarName
	}
	if typ != syscall.S_IFLNK {
		if err := c.xattrs(dir, name, hdr); err != nil {
			return err
		}
	}
	switch typ {
	case syscall.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, tarName+"/"
	case syscall.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		f, err := dir.OpenRegular(name)
		if err != nil {
			return fmt.Errorf("archiving %s: %w", rel, err)
		}
		defer f.Close()
		if err := c.header(hdr, rel); err != nil {
			return err
		}
		n, err := io.CopyN(c.tw, f, st.Size)
		if err == io.EOF {
			return fmt.Errorf("archiving %s: the file shrank from %d to %d bytes while being read", rel, st.Size, n)
		}
		if err != nil {
			return fmt.Errorf("archiving %s: %w", rel, err)
		}
		return nil
	case syscall.S_IFLNK:
		target, err := dir.Readlink(name)
		if err != nil {
			return fmt.Errorf("archiving %s: %w", rel, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case syscall.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case syscall.S_IFCHR, syscall.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if typ == syscall.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	default:
		return nil // a socket cannot be archived; tar tools skip them too
	}
	return c.header(hdr, rel)
}

func (c *contextWriter) header(hdr *tar.Header, rel string) error {
	if err := c.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archiving %s: %w", rel, err)
	}
	return nil
}

// xattrs adds the extended attributes a layer keeps (file capabilities
// and user.*, not overlay bookkeeping) as PAX records: COPY keeps them.
func (c *contextWriter) xattrs(dir *rooted.Dir, name string, hdr *tar.Header) error {
	names, err := dir.Llistxattr(name)
	if err != nil {
		return nil // a file system without xattrs has none to keep
	}
	for _, x := range names {
		if x != "security.capability" && (!strings.HasPrefix(x, "user.") || strings.HasPrefix(x, "user.overlay.")) {
			continue
		}
		v, err := dir.Lgetxattr(name, x)
		if err != nil {
			return fmt.Errorf("archiving %s: %w", hdr.Name, err)
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+x] = string(v)
	}
	return nil
}
