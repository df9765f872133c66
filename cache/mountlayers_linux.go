package cache

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/rooted"
)

// Cache mounts travel between runners as layers (--cache-to …,mounts=true):
// an ordered list whose application gives an instance's contents. An
// instance remembers which list it equals and what its files looked like
// then (its state, kept in its lock file, which prune removes with it), so
// that an export tars only what changed since: the new layer is the diff,
// appended to the list.

// mountState is what an instance was restored from or last exported as.
type mountState struct {
	// Dir identifies the instance directory the state is about: a state
	// left beside a newer directory (a crash between the two writes) is
	// ignored.
	Dir     uint64      `json:"dir"`
	Layers  []mountBlob `json:"layers"`
	Created time.Time   `json:"created"`
	// Files are the entries below the instance, by slash path.
	Files map[string]mountFile `json:"files"`
}

type mountBlob struct {
	DiffID    v1.Hash `json:"diffID"`
	Digest    v1.Hash `json:"digest"`
	Size      int64   `json:"size"`
	MediaType string  `json:"mediaType"`
}

// mountFile is what tells a changed entry: any write, chmod, chown or
// replacement changes the inode's ctime or number, and ctime cannot be set
// back by a program.
type mountFile struct {
	Ino   uint64 `json:"i"`
	Ctime int64  `json:"c"`
	Mode  uint32 `json:"m"`
}

func fileOf(st *syscall.Stat_t) mountFile {
	return mountFile{Ino: st.Ino, Ctime: st.Ctim.Nano(), Mode: st.Mode}
}

func blobsOf(layers []LayerInfo) []mountBlob {
	out := make([]mountBlob, len(layers))
	for i, l := range layers {
		out[i] = mountBlob{DiffID: l.DiffID, Digest: l.Digest, Size: l.Size, MediaType: string(l.MediaType)}
	}
	return out
}

func dirIno(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return 0, &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	return st.Ino, nil
}

// readMountState reads the state of the instance dir; nil when it has
// none that is about this very directory.
func readMountState(dir string) *mountState {
	f, err := os.Open(dir + ".lock")
	if err != nil {
		return nil
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil // empty: a lock file only
	}
	var st mountState
	// gzip's trailer (CRC and length) refuses a half-written state
	if err := json.NewDecoder(zr).Decode(&st); err != nil {
		return nil
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil
	}
	ino, err := dirIno(dir)
	if err != nil || ino != st.Dir {
		return nil
	}
	return &st
}

// writeMountState replaces the state in dir's lock file (nil clears it).
// It is written in place: the lock file's inode is what others flock.
func writeMountState(dir string, st *mountState) error {
	f, err := os.OpenFile(dir+".lock", os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("recording the state of cache mount %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("recording the state of cache mount %s: %w", dir, err)
	}
	if st == nil {
		return nil
	}
	if st.Dir, err = dirIno(dir); err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	if err := json.NewEncoder(zw).Encode(st); err != nil {
		return fmt.Errorf("recording the state of cache mount %s: %w", dir, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("recording the state of cache mount %s: %w", dir, err)
	}
	return f.Sync()
}

// seedCacheMount applies layers, in order, to the empty directory dir with
// the flattened-rootfs sink: each read once through the verified download
// path (digest, declared size, bounded unpacked size, diffID) with its
// blob kept in the store, so that an export can name it again. It returns
// the state of the result.
func (s *Store) seedCacheMount(ctx context.Context, dir string, layers []LayerInfo, wrap func(v1.Layer) v1.Layer) (*mountState, error) {
	root, err := rooted.Open(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	a := layer.NewApplier(root, layer.Options{
		Sink:         layer.Rootfs,
		ImplicitDir:  &tar.Header{Mode: 0o755, ModTime: time.Unix(0, 0)},
		Unprivileged: os.Geteuid() != 0,
	})
	defer a.Close()
	for i, info := range layers {
		l := s.Layer(info, "")
		if wrap != nil {
			l = wrap(l)
		}
		blob, err := s.downloadTo(ctx, l, a.Apply)
		if blob != nil {
			defer blob.discard()
		}
		if err != nil {
			return nil, fmt.Errorf("applying layer %d (%s): %w", i+1, info.Digest, err)
		}
		if blob.digest != info.Digest {
			return nil, fmt.Errorf("applying layer %d: got digest %s, want %s", i+1, blob.digest, info.Digest)
		}
		if blob.diffID != info.DiffID {
			return nil, fmt.Errorf("applying layer %d (%s): got diffID %s, want %s", i+1, info.Digest, blob.diffID, info.DiffID)
		}
		if _, err := os.Lstat(s.blobPath(info.Digest)); err != nil {
			if err := s.storeBlob(blob); err != nil {
				return nil, err
			}
		}
	}
	if err := a.Finish(root); err != nil {
		return nil, fmt.Errorf("applying layers: %w", err)
	}
	files, err := indexTree(ctx, root.Dir())
	if err != nil {
		return nil, err
	}
	return &mountState{Layers: blobsOf(layers), Files: files}, nil
}

// indexTree lists every entry below d, by slash path, without following
// symlinks.
func indexTree(ctx context.Context, d *rooted.Dir) (map[string]mountFile, error) {
	out := map[string]mountFile{}
	var walk func(d *rooted.Dir, rel string) error
	walk = func(d *rooted.Dir, rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		names, err := d.Names()
		if err != nil {
			return err
		}
		for _, n := range names {
			st, err := d.Lstat(n)
			if err != nil {
				return err
			}
			p := path.Join(rel, n)
			out[p] = fileOf(st)
			if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				sub, err := d.OpenDir(n)
				if err != nil {
					return err
				}
				err = walk(sub, p)
				sub.Close()
				if err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(d, "")
}

// SnapshotCacheMount returns the contents of cache mount id as layers:
// those of the instance's state (what it was restored from or last
// exported as) and, when it has changed since, one more holding only the
// change — changed and new entries, and whiteouts for removed ones. The
// instance is the most recently used one; ok is false when there is none.
// The new layer is stored as a blob only (nothing of it is unpacked), and
// the state advances to the result, so the next snapshot is a diff
// against it.
func (s *Store) SnapshotCacheMount(ctx context.Context, id string, opt MountSnapshotOptions) (snap MountSnapshot, ok bool, err error) {
	inst := s.latestInstance(id)
	if inst == "" {
		return MountSnapshot{}, false, nil
	}
	if opt.MaxLayers <= 0 {
		opt.MaxLayers = 8
	}
	if opt.Wait <= 0 {
		opt.Wait = time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, opt.Wait)
	l, err := waitLockFile(wctx, inst+".lock")
	cancel()
	if err != nil {
		return MountSnapshot{}, false, fmt.Errorf("waiting for cache mount %s, in use by another build: %w", id, err)
	}
	defer l.release()
	if _, err := os.Lstat(inst); err != nil {
		return MountSnapshot{}, false, nil // pruned meanwhile
	}
	st := readMountState(inst)
	if st == nil || opt.Full {
		st = &mountState{Files: map[string]mountFile{}}
	}
	base := make([]LayerInfo, len(st.Layers))
	for i, b := range st.Layers {
		base[i] = LayerInfo{DiffID: b.DiffID, Digest: b.Digest, Size: b.Size, MediaType: types.MediaType(b.MediaType)}
	}

	root, err := rooted.Open(inst)
	if err != nil {
		return MountSnapshot{}, false, err
	}
	defer root.Close()
	tmp, err := s.TempDir("mount-diff-")
	if err != nil {
		return MountSnapshot{}, false, err
	}
	defer os.RemoveAll(tmp)
	diff := filepath.Join(tmp, "fs")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return MountSnapshot{}, false, err
	}
	tarDir := inst // no base: the layer is the whole instance, read in place
	var files map[string]mountFile
	if len(base) > 0 {
		d := &differ{ctx: ctx, base: st.Files, files: map[string]mountFile{}, links: map[uint64]linkRef{}}
		d.children = childrenOf(st.Files)
		dst, err := rooted.Open(diff)
		if err != nil {
			return MountSnapshot{}, false, err
		}
		top := &lazyDir{open: func() (*rooted.Dir, error) { return dst.Dir().Dup() }}
		err = d.walk(root.Dir(), "", top)
		top.close()
		d.close()
		dst.Close()
		if err != nil {
			return MountSnapshot{}, false, fmt.Errorf("comparing cache mount %s with its last layers: %w", id, err)
		}
		if !d.changed {
			return MountSnapshot{Layers: base, Created: st.Created}, true, nil
		}
		files, tarDir = d.files, diff
		if len(base) >= opt.MaxLayers {
			// d.files lists the whole instance: one layer of it
			base, tarDir = nil, inst
		}
	} else if files, err = indexTree(ctx, root.Dir()); err != nil {
		return MountSnapshot{}, false, fmt.Errorf("listing cache mount %s: %w", id, err)
	} else if len(files) == 0 {
		return MountSnapshot{}, true, nil // empty: nothing to carry
	}
	info, err := s.commitBlob(ctx, tarDir)
	if err != nil {
		return MountSnapshot{}, false, fmt.Errorf("storing cache mount %s as a layer: %w", id, err)
	}
	layers := append(base, info)
	now := time.Now().UTC().Truncate(time.Second)
	if err := writeMountState(inst, &mountState{Layers: blobsOf(layers), Created: now, Files: files}); err != nil {
		return MountSnapshot{}, false, err
	}
	return MountSnapshot{Layers: layers, Created: now, Added: info}, true, nil
}

// latestInstance is the most recently used instance of id, "" if none.
func (s *Store) latestInstance(id string) string {
	base := s.cacheMountBase(id)
	var best string
	var bestTime time.Time
	for n := 0; ; n++ {
		inst := base
		if n > 0 {
			inst = fmt.Sprintf("%s-%d", base, n)
		}
		fi, err := os.Lstat(inst)
		if err != nil {
			break
		}
		if !fi.IsDir() {
			continue
		}
		used := fi.ModTime()
		if li, err := os.Stat(inst + ".lock"); err == nil {
			used = li.ModTime()
		}
		if best == "" || used.After(bestTime) {
			best, bestTime = inst, used
		}
	}
	return best
}

// commitBlob stores the layer tar of dir, gzipped, as a blob only: the
// contents stay where they are.
func (s *Store) commitBlob(ctx context.Context, dir string) (LayerInfo, error) {
	blob, err := s.compress(ctx, dir, layer.TarOptions{})
	if err != nil {
		return LayerInfo{}, err
	}
	defer blob.discard()
	if err := s.storeBlob(blob); err != nil {
		return LayerInfo{}, err
	}
	return LayerInfo{DiffID: blob.diffID, Digest: blob.digest, Size: blob.size, MediaType: types.OCILayer}, nil
}

// lazyDir is a directory of the diff, made when the first entry below it
// is.
type lazyDir struct {
	d    *rooted.Dir
	open func() (*rooted.Dir, error)
}

func (l *lazyDir) get() (*rooted.Dir, error) {
	if l.d == nil {
		d, err := l.open()
		if err != nil {
			return nil, err
		}
		l.d = d
	}
	return l.d, nil
}

func (l *lazyDir) close() {
	if l.d != nil {
		l.d.Close()
	}
}

// differ builds the overlay-format diff of an instance against the files
// of its state: changed and new entries copied (never linked: a link would
// change the instance's ctimes), whiteouts for removed ones.
type differ struct {
	ctx      context.Context
	base     map[string]mountFile
	children map[string][]string // base entries by parent path
	files    map[string]mountFile
	links    map[uint64]linkRef // inode → the diff's first copy of it
	changed  bool
}

func childrenOf(files map[string]mountFile) map[string][]string {
	out := map[string][]string{}
	for p := range files {
		dir, name := path.Split(p)
		dir = path.Clean("/" + dir)[1:]
		out[dir] = append(out[dir], name)
	}
	return out
}

func isDirMode(m uint32) bool { return m&syscall.S_IFMT == syscall.S_IFDIR }

// walk compares the instance directory src (at rel) with the base,
// writing what differs below dst.
func (d *differ) walk(src *rooted.Dir, rel string, dst *lazyDir) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	names, err := src.Names()
	if err != nil {
		return err
	}
	slices.Sort(names)
	present := map[string]bool{}
	for _, n := range names {
		present[n] = true
		p := path.Join(rel, n)
		st, err := src.Lstat(n)
		if err != nil {
			return err
		}
		cur := fileOf(st)
		d.files[p] = cur
		old, inBase := d.base[p]
		changed := !inBase || old.Ino != cur.Ino || old.Ctime != cur.Ctime || old.Mode != cur.Mode
		if isDirMode(cur.Mode) {
			sub, err := src.OpenDir(n)
			if err != nil {
				return err
			}
			child := &lazyDir{open: func() (*rooted.Dir, error) {
				pd, err := dst.get()
				if err != nil {
					return nil, err
				}
				// open to its entries until finishDir gives it its mode
				// (Go's module cache is made of 0555 directories)
				if err := pd.Mkdir(n, 0o700); err != nil {
					return nil, err
				}
				return pd.OpenDir(n)
			}}
			if changed {
				if _, err := child.get(); err != nil {
					sub.Close()
					return err
				}
			}
			if !inBase || !isDirMode(old.Mode) {
				// a new directory: nothing of the base is below it
				d.children[p] = nil
			}
			err = d.walk(sub, p, child)
			sub.Close()
			if err == nil && child.d != nil {
				d.changed = true
				err = d.finishDir(dst, n, st)
			}
			child.close()
			if err != nil {
				return err
			}
			continue
		}
		if !changed {
			continue
		}
		d.changed = true
		pd, err := dst.get()
		if err != nil {
			return err
		}
		if err := d.copyEntry(src, pd, n, p, st); err != nil {
			return err
		}
	}
	for _, n := range d.children[rel] {
		if present[n] {
			continue
		}
		pd, err := dst.get()
		if err != nil {
			return err
		}
		if err := pd.Mknod(n, syscall.S_IFCHR, 0); err != nil {
			return fmt.Errorf("marking %s removed: %w", path.Join(rel, n), err)
		}
		d.changed = true
	}
	return nil
}

// finishDir gives the diff's copy of directory name its owner, mode and
// times, once its entries are in.
func (d *differ) finishDir(dst *lazyDir, name string, st *syscall.Stat_t) error {
	pd, err := dst.get()
	if err != nil {
		return err
	}
	if err := pd.Lchown(name, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, syscall.EPERM) {
		return err
	}
	if err := pd.Chmod(name, rooted.PermBits(st.Mode)); err != nil {
		return err
	}
	return pd.Lutimes(name, time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()))
}

// copyEntry copies the non-directory name of src into dst.
func (d *differ) copyEntry(src, dst *rooted.Dir, name, p string, st *syscall.Stat_t) error {
	if st.Nlink > 1 {
		if first, ok := d.links[st.Ino]; ok {
			// another path of an inode already copied: a hardlink in
			// the diff too (the tar writer makes it one)
			return d.linkInDiff(dst, first, name)
		}
		h, err := dst.Dup()
		if err != nil {
			return err
		}
		d.links[st.Ino] = linkRef{dir: h, name: name}
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		in, err := src.OpenRegular(name)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := dst.Open(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return fmt.Errorf("copying %s: %w", p, err)
		}
		if err := out.Close(); err != nil {
			return err
		}
	case syscall.S_IFLNK:
		target, err := src.Readlink(name)
		if err != nil {
			return err
		}
		if err := dst.Symlink(target, name); err != nil {
			return err
		}
	case syscall.S_IFSOCK:
		return nil // a layer leaves sockets out
	default:
		if err := dst.Mknod(name, st.Mode, st.Rdev); err != nil {
			return err
		}
	}
	if err := dst.Lchown(name, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, syscall.EPERM) {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		if err := dst.Chmod(name, rooted.PermBits(st.Mode)); err != nil {
			return err
		}
	}
	return dst.Lutimes(name, time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()))
}

// linkInDiff links name in dst to the diff's first copy of the inode.
func (d *differ) linkInDiff(dst *rooted.Dir, first linkRef, name string) error {
	if err := dst.Link(first.dir, first.name, name); err != nil {
		return fmt.Errorf("linking %s: %w", name, err)
	}
	return nil
}

// linkRef is where the diff holds the first copy of a hardlinked inode.
type linkRef struct {
	dir  *rooted.Dir // a handle of its own, closed by close
	name string
}

func (d *differ) close() {
	for _, l := range d.links {
		l.dir.Close()
	}
}

// renameNoReplace renames a directory into place unless something is
// there already (os.ErrExist then).
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if err == unix.EEXIST || err == unix.ENOTEMPTY {
		return os.ErrExist
	}
	if err == unix.EINVAL || err == unix.ENOSYS {
		// a filesystem without RENAME_NOREPLACE: rename(2) refuses a
		// non-empty target anyway
		err = unix.Rename(from, to)
		if err == unix.EEXIST || err == unix.ENOTEMPTY {
			return os.ErrExist
		}
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
