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
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/ctxio"
	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/rooted"
)

// flattened is an image's root filesystem applied, bottom layer first, to
// a scratch directory by the one layer applier (its flattened-rootfs sink).
type flattened struct {
	root *rooted.Root
	a    *layer.Applier
	// Without meta (RootfsTar) nothing but contents lands on the files,
	// which stay readable whatever user kiln runs as; the headers say the
	// rest.
	headers map[string]*tar.Header // header of each path as it now is
	inodes  map[uint64]*tar.Header // header of the entry that made each regular file
}

// flatten applies img's layers to the existing empty directory dir. With
// meta, owners (when running as root), modes, xattrs and times go onto the
// files and directories (Local); finish sets the directories' last.
func flatten(ctx context.Context, img v1.Image, dir string, meta bool) (_ *flattened, err error) {
	root, err := rooted.Open(dir)
	if err != nil {
		return nil, err
	}
	f := &flattened{root: root}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	opts := layer.Options{
		Sink: layer.Rootfs,
		// A directory a layer uses without listing it is made the way
		// docker makes it: root's, 0755; the epoch keeps output stable.
		ImplicitDir:  &tar.Header{Mode: 0o755, ModTime: time.Unix(0, 0)},
		Unprivileged: os.Geteuid() != 0,
	}
	if !meta {
		f.headers = map[string]*tar.Header{}
		f.inodes = map[uint64]*tar.Header{}
		opts.Record = f.record
	}
	f.a = layer.NewApplier(root, opts)
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("listing layers: %w", err)
	}
	for i, l := range layers {
		if err := f.applyLayer(ctx, l); err != nil {
			d, _ := l.Digest()
			return nil, fmt.Errorf("applying layer %d (%s): %w", i+1, d, err)
		}
	}
	return f, nil
}

func (f *flattened) close() {
	if f.a != nil {
		f.a.Close()
	}
	f.root.Close()
}

func (f *flattened) applyLayer(ctx context.Context, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := f.a.Apply(ctx, rc); err != nil {
		return err
	}
	return rc.Close()
}

// record keeps what the applier did not put on the files.
func (f *flattened) record(p string, hdr *tar.Header, ino uint64) {
	p = strings.TrimPrefix(p, "/")
	f.headers[p] = hdr
	if ino != 0 {
		f.inodes[ino] = hdr
	}
}

// finish gives every directory its owner, xattrs, mode and times once the
// tree has reached its final home dir. Each is reached again from dir by
// descriptor without following a symlink, so a directory a later layer
// replaced by a symlink to a host directory is skipped, never followed.
func (f *flattened) finish(dir string) error {
	root, err := rooted.Open(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return f.a.Finish(root)
}

// moveInto moves every entry of the flattened tree into the existing
// directory dest: a directory present in both is merged, anything else in
// dest with the same name is replaced. Both are on one filesystem, so each
// file arrives whole by a rename; every step goes through directory
// handles, never following a symlink on either side.
func (f *flattened) moveInto(ctx context.Context, dest string) error {
	droot, err := rooted.Open(dest)
	if err != nil {
		return err
	}
	defer droot.Close()
	return mergeDirs(ctx, f.root.Dir(), droot.Dir())
}

func mergeDirs(ctx context.Context, src, dst *rooted.Dir) error {
	names, err := src.Names()
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		sst, err := src.Lstat(n)
		if err != nil {
			return err
		}
		dst2, err := dst.Lstat(n)
		switch {
		case err == nil && isDir(sst) && isDir(dst2):
			if err := mergeSub(ctx, src, dst, n); err != nil {
				return err
			}
			continue
		case err == nil:
			if err := dst.RemoveAll(n); err != nil {
				return fmt.Errorf("replacing %s: %w", path.Join(dst.Name(), n), err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		if err := src.Rename(n, dst, n); err != nil {
			return err
		}
	}
	return nil
}

func mergeSub(ctx context.Context, src, dst *rooted.Dir, n string) error {
	s, err := src.OpenDir(n)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := dst.OpenDir(n)
	if err != nil {
		return err
	}
	defer d.Close()
	return mergeDirs(ctx, s, d)
}

func isDir(st *syscall.Stat_t) bool { return st.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// writeTar writes the tree as a tar, sorted by name, from the recorded
// headers. Files linked together are found by inode rather than taken from
// the layers' link entries: a later layer may have replaced the file a
// link first pointed to.
func (f *flattened) writeTar(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	t := &treeWriter{f: f, tw: tw, first: map[uint64]string{}}
	if err := t.dir(ctx, f.root.Dir(), ""); err != nil {
		return err
	}
	return tw.Close()
}

type treeWriter struct {
	f     *flattened
	tw    *tar.Writer
	first map[uint64]string
}

func (t *treeWriter) dir(ctx context.Context, d *rooted.Dir, rel string) error {
	names, err := d.Names()
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := path.Join(rel, n)
		st, err := d.Lstat(n)
		if err != nil {
			return err
		}
		if err := t.entry(ctx, d, n, p, st); err != nil {
			return err
		}
	}
	return nil
}

func (t *treeWriter) entry(ctx context.Context, d *rooted.Dir, n, rel string, st *syscall.Stat_t) error {
	rec := t.f.headers[rel]
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
	content := false
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		out.Typeflag, out.Name = tar.TypeDir, rel+"/"
	case syscall.S_IFLNK:
		out.Typeflag = tar.TypeSymlink
		target, err := d.Readlink(n)
		if err != nil {
			return err
		}
		out.Linkname = target
	default:
		if rec.Typeflag == tar.TypeChar || rec.Typeflag == tar.TypeBlock || rec.Typeflag == tar.TypeFifo {
			out.Typeflag, out.Devmajor, out.Devminor = rec.Typeflag, rec.Devmajor, rec.Devminor
			break
		}
		if f, ok := t.first[st.Ino]; ok {
			out.Typeflag, out.Linkname = tar.TypeLink, f
			break
		}
		t.first[st.Ino] = rel
		if made := t.f.inodes[st.Ino]; made != nil {
			out.Mode, out.Uid, out.Gid, out.Uname, out.Gname, out.ModTime = made.Mode, made.Uid, made.Gid, made.Uname, made.Gname, made.ModTime
			out.PAXRecords = xattrRecords(made)
		}
		out.Typeflag, out.Size, content = tar.TypeReg, st.Size, true
	}
	if err := t.tw.WriteHeader(out); err != nil {
		return err
	}
	if out.Typeflag == tar.TypeDir {
		sub, err := d.OpenDir(n)
		if err != nil {
			return err
		}
		defer sub.Close()
		return t.dir(ctx, sub, rel)
	}
	if !content {
		return nil
	}
	file, err := d.OpenRegular(n)
	if err != nil {
		return err
	}
	defer file.Close()
	_, err = io.Copy(t.tw, ctxio.Reader(ctx, file))
	return err
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
