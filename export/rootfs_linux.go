package export

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	xattrPrefix    = "SCHILY.xattr."
)

// applier builds a flattened root filesystem by applying layer tars, bottom
// layer first, to a host directory.
type applier struct {
	root string // host directory holding the tree
	// meta: owners, modes, times and xattrs go onto the files (Local).
	// Otherwise they are only recorded, in headers and inodes, and the
	// files stay plainly readable for writeTar whatever user kiln runs as.
	meta   bool
	isRoot bool

	headers map[string]*tar.Header   // !meta: header of each path as it now is
	inodes  map[inodeKey]*tar.Header // !meta: header of the entry that made each regular file
	dirs    map[string]*tar.Header   // meta: directories to finish last
	layer   map[string]bool          // paths the layer being applied wrote (opaque keeps them)
	parents map[string]string        // directory as named → as resolved; cleared by any removal
}

type inodeKey struct{ dev, ino uint64 }

// flatten applies img's layers to the existing empty directory root.
func flatten(ctx context.Context, img v1.Image, root string, meta bool) (*applier, error) {
	a := &applier{
		root:    root,
		meta:    meta,
		isRoot:  os.Geteuid() == 0,
		headers: map[string]*tar.Header{},
		inodes:  map[inodeKey]*tar.Header{},
		dirs:    map[string]*tar.Header{},
		parents: map[string]string{},
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("listing layers: %w", err)
	}
	for i, l := range layers {
		if err := a.applyLayer(ctx, l); err != nil {
			d, _ := l.Digest()
			return nil, fmt.Errorf("applying layer %d (%s): %w", i+1, d, err)
		}
	}
	return a, nil
}

func (a *applier) applyLayer(ctx context.Context, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	a.layer = map[string]bool{}
	tr := tar.NewReader(ctxReader{ctx, rc})
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return rc.Close()
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		if err := a.entry(ctx, hdr, tr); err != nil {
			return fmt.Errorf("extracting %s: %w", hdr.Name, err)
		}
	}
}

func (a *applier) host(rel string) string {
	return filepath.Join(a.root, filepath.FromSlash(rel))
}

// entry applies one layer entry.
func (a *applier) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	rel, err := cleanEntryName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		// The layer's "./": the output root is the caller's directory,
		// whose own mode and owner are not the image's to set.
		return nil
	}
	dir, base := path.Dir(rel), path.Base(rel)
	if base == whiteoutOpaque {
		return a.opaque(dir)
	}
	if name, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		if name == "" || name == "." || name == ".." {
			return errors.New("malformed whiteout")
		}
		return a.whiteout(path.Join(dir, name))
	}

	parent, _, err := a.resolveDir(dir, true)
	if err != nil {
		return err
	}
	p := path.Join(parent, base)
	host := a.host(p)

	// What a lower layer left at this path is replaced, except that a
	// directory met by a directory stays, with the lower layers' contents.
	if fi, err := os.Lstat(host); err == nil {
		if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			if err := a.remove(host); err != nil {
				return err
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	a.layer[p] = true

	switch hdr.Typeflag {
	case tar.TypeDir:
		// 0700 until finish: a read-only directory must still take the
		// entries of later layers.
		if err := os.Mkdir(host, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		a.record(p, hdr)
		return nil

	case tar.TypeReg:
		f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if !a.meta {
			fi, err := os.Lstat(host)
			if err != nil {
				return err
			}
			a.inodes[inodeOf(fi)] = hdr
		}

	case tar.TypeSymlink:
		// The target is only text: it is never followed here except by
		// resolveDir, which keeps it inside the root.
		if err := os.Symlink(hdr.Linkname, host); err != nil {
			return err
		}

	case tar.TypeLink:
		target, err := cleanEntryName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		if target == "" {
			return errors.New("hardlink to the root directory")
		}
		tdir, ok, err := a.resolveDir(path.Dir(target), false)
		if err != nil {
			return fmt.Errorf("hardlink target %s: %w", hdr.Linkname, err)
		}
		if !ok {
			return fmt.Errorf("hardlink target %s does not exist", hdr.Linkname)
		}
		if err := os.Link(a.host(path.Join(tdir, path.Base(target))), host); err != nil {
			return err
		}
		// The link shares its target's inode, owner and mode included.
		a.record(p, hdr)
		return nil

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		made, err := a.mknod(host, hdr)
		if err != nil || !made {
			return err
		}

	case tar.TypeXGlobalHeader:
		return nil

	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	a.record(p, hdr)
	if a.meta {
		return a.setMeta(host, hdr)
	}
	return nil
}

// record notes the header that made path p: for writeTar, or for finish
// when p is a directory.
func (a *applier) record(p string, hdr *tar.Header) {
	switch {
	case !a.meta:
		a.headers[p] = hdr
	case hdr.Typeflag == tar.TypeDir:
		a.dirs[p] = hdr
	}
}

// mknod makes a device node or fifo. Without root a device cannot be made:
// Local leaves it out (made is false), and the tar writer gets an empty
// placeholder whose recorded header still says what it is.
func (a *applier) mknod(host string, hdr *tar.Header) (made bool, err error) {
	if !a.meta {
		return true, os.WriteFile(host, nil, 0o600)
	}
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	case tar.TypeFifo:
		mode |= unix.S_IFIFO
	}
	err = unix.Mknod(host, mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	if err != nil && !a.isRoot && hdr.Typeflag != tar.TypeFifo && errors.Is(err, unix.EPERM) {
		return false, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "mknod", Path: host, Err: err}
	}
	return true, nil
}

// setMeta gives a non-directory its owner, mode, xattrs and times, in that
// order: chown clears setuid bits and file capabilities, so it goes first.
func (a *applier) setMeta(host string, hdr *tar.Header) error {
	if err := a.lchown(host, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := os.Chmod(host, hdr.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
	if err := a.setXattrs(host, hdr); err != nil {
		return err
	}
	return lutimes(host, hdr)
}

// lchown is skipped without root: an unprivileged Local export owns its
// files, as an unprivileged `tar -x` does.
func (a *applier) lchown(host string, hdr *tar.Header) error {
	err := os.Lchown(host, hdr.Uid, hdr.Gid)
	if err != nil && !a.isRoot && errors.Is(err, fs.ErrPermission) {
		return nil
	}
	return err
}

func (a *applier) setXattrs(host string, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		err := unix.Lsetxattr(host, name, []byte(v), 0)
		if err != nil && !a.isRoot && errors.Is(err, unix.EPERM) {
			continue // trusted.* and security.* need privileges
		}
		if err != nil {
			return &os.PathError{Op: "setxattr " + name, Path: host, Err: err}
		}
	}
	return nil
}

func lutimes(host string, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, host, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: host, Err: err}
	}
	return nil
}

// finish gives every directory its owner, xattrs, mode and times, once all
// files are in place (writing into a directory changes its mtime) and the
// tree has reached its final home root; deepest first, so a read-only
// directory is closed only after everything under it is done.
func (a *applier) finish(root string) error {
	paths := make([]string, 0, len(a.dirs))
	for p := range a.dirs {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, func(x, y string) int {
		return strings.Count(y, "/") - strings.Count(x, "/")
	})
	for _, p := range paths {
		hdr := a.dirs[p]
		host := filepath.Join(root, filepath.FromSlash(p))
		fi, err := os.Lstat(host)
		if err != nil || !fi.IsDir() {
			continue // removed or replaced by a later layer
		}
		if err := a.lchown(host, hdr); err != nil {
			return err
		}
		if err := a.setXattrs(host, hdr); err != nil {
			return err
		}
		if err := os.Chmod(host, hdr.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
		if err := lutimes(host, hdr); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes host and everything under it.
func (a *applier) remove(host string) error {
	clear(a.parents)
	return os.RemoveAll(host)
}

// whiteout applies ".wh.NAME": NAME from the layers below is gone.
func (a *applier) whiteout(rel string) error {
	dir, ok, err := a.resolveDir(path.Dir(rel), false)
	if err != nil || !ok {
		return err
	}
	return a.remove(a.host(path.Join(dir, path.Base(rel))))
}

// opaque applies ".wh..wh..opq": of the directory's contents only what
// this layer put there is visible.
func (a *applier) opaque(rel string) error {
	dir, ok, err := a.resolveDir(rel, false)
	if err != nil || !ok {
		return err
	}
	return a.keepOnlyLayer(dir)
}

func (a *applier) keepOnlyLayer(dir string) error {
	entries, err := os.ReadDir(a.host(dir))
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := path.Join(dir, e.Name())
		if a.layer[p] {
			// Written by this layer, but a directory may still hold
			// entries from below, which the opaque marker hides too.
			if e.IsDir() {
				if err := a.keepOnlyLayer(p); err != nil {
					return err
				}
			}
			continue
		}
		if err := a.remove(a.host(p)); err != nil {
			return err
		}
	}
	return nil
}

// resolveDir resolves the directory rel (slash-separated, relative to the
// root) to where it really is in the tree, following symlinks as a process
// chrooted at the root would: an absolute target starts again at the root
// and ".." stops at it, so nothing resolves outside the root. Missing
// directories are created when create is set; otherwise ok is false.
//
// This is the one place where layer paths meet the host filesystem.
func (a *applier) resolveDir(rel string, create bool) (resolved string, ok bool, err error) {
	if rel == "." || rel == "" {
		return "", true, nil
	}
	if r, ok := a.parents[rel]; ok {
		return r, true, nil
	}
	todo := strings.Split(rel, "/")
	cur, links := "", 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur = path.Dir(cur); cur == "." {
				cur = ""
			}
			continue
		}
		next := path.Join(cur, c)
		host := a.host(next)
		fi, err := os.Lstat(host)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if !create {
				return "", false, nil
			}
			if err := a.implicitDir(next); err != nil {
				return "", false, err
			}
			cur = next
		case err != nil:
			return "", false, err
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > 255 {
				return "", false, fmt.Errorf("resolving %s: too many levels of symbolic links", rel)
			}
			target, err := os.Readlink(host)
			if err != nil {
				return "", false, err
			}
			if path.IsAbs(target) {
				cur = ""
			}
			todo = append(strings.Split(target, "/"), todo...)
		case fi.IsDir():
			cur = next
		default:
			return "", false, fmt.Errorf("resolving %s: /%s is not a directory", rel, next)
		}
	}
	a.parents[rel] = cur
	return cur, true, nil
}

// implicitDir creates a directory a layer uses without an entry of its own,
// the way docker does: root-owned, 0755.
func (a *applier) implicitDir(rel string) error {
	if err := os.Mkdir(a.host(rel), 0o700); err != nil {
		return err
	}
	a.record(rel, &tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
	return nil
}

func inodeOf(fi fs.FileInfo) inodeKey {
	st := fi.Sys().(*syscall.Stat_t)
	return inodeKey{dev: st.Dev, ino: st.Ino}
}

// writeTar writes the tree as a tar, sorted by name, from the recorded
// headers. Files linked together are found by inode rather than taken from
// the layers' link entries: a later layer may have replaced the file a
// link first pointed to.
func (a *applier) writeTar(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	first := map[inodeKey]string{}
	err := filepath.WalkDir(a.root, func(host string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		relHost, err := filepath.Rel(a.root, host)
		if err != nil || relHost == "." {
			return err
		}
		rel := filepath.ToSlash(relHost)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rec := a.headers[rel]
		if rec == nil {
			return fmt.Errorf("no header recorded for %s", rel)
		}
		out := &tar.Header{
			Name:       rel,
			Mode:       rec.Mode,
			Uid:        rec.Uid,
			Gid:        rec.Gid,
			Uname:      rec.Uname,
			Gname:      rec.Gname,
			ModTime:    rec.ModTime,
			PAXRecords: xattrRecords(rec),
		}
		var content string
		switch {
		case fi.IsDir():
			out.Typeflag, out.Name = tar.TypeDir, rel+"/"
		case fi.Mode()&fs.ModeSymlink != 0:
			out.Typeflag = tar.TypeSymlink
			if out.Linkname, err = os.Readlink(host); err != nil {
				return err
			}
		case rec.Typeflag == tar.TypeChar || rec.Typeflag == tar.TypeBlock || rec.Typeflag == tar.TypeFifo:
			out.Typeflag, out.Devmajor, out.Devminor = rec.Typeflag, rec.Devmajor, rec.Devminor
		default:
			ino := inodeOf(fi)
			if f, ok := first[ino]; ok {
				out.Typeflag, out.Linkname = tar.TypeLink, f
				break
			}
			first[ino] = rel
			if made := a.inodes[ino]; made != nil {
				out.Mode, out.Uid, out.Gid, out.Uname, out.Gname, out.ModTime = made.Mode, made.Uid, made.Gid, made.Uname, made.Gname, made.ModTime
				out.PAXRecords = xattrRecords(made)
			}
			out.Typeflag, out.Size, content = tar.TypeReg, fi.Size(), host
		}
		if err := tw.WriteHeader(out); err != nil {
			return err
		}
		if content == "" {
			return nil
		}
		f, err := os.Open(content)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, ctxReader{ctx, f})
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func xattrRecords(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
