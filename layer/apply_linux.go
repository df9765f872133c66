package layer

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/userns"
	"github.com/kiln-build/kiln/rooted"
)

// Bounds on what one tar entry may ask of the applier. The kernel takes
// no xattr value over 64 KiB anyway; saying so up front gives a clear
// error instead of E2BIG, and the count bounds the work per entry.
const (
	MaxXattrSize  = 64 << 10
	MaxXattrCount = 128
)

// Sink is what an Applier builds from layer tars.
type Sink int

const (
	// LayerDir keeps one layer in overlay format, to serve as an overlay
	// lowerdir: .wh.NAME becomes a 0:0 character device NAME, and
	// DIR/.wh..wh..opq sets trusted.overlay.opaque=y on DIR
	// (user.overlay.opaque in a user namespace). A parent directory that is
	// a symlink is refused (*EscapeError): a layer directory is a diff, and
	// what a symlink in it means depends on the layers below.
	LayerDir Sink = iota
	// Rootfs is a flattened root filesystem: layers applied one above the
	// other, whiteouts and opaque markers applied by deleting what they
	// hide, symlinks in parent paths followed inside the root as a process
	// chrooted there would (BuildKit's fs.RootPath).
	Rootfs
)

// Owner is a numeric owner.
type Owner struct{ UID, GID int }

// Options tune an Applier. The zero value is LayerDir.
type Options struct {
	Sink Sink

	// The options below are what the Rootfs callers (export, ADD) need;
	// Unpack sets none of them.

	// LiteralWhiteouts extracts .wh. entries as ordinary files: ADD of an
	// archive applies no whiteouts (go-archive's Unpack has no whiteout
	// converter unless asked).
	LiteralWhiteouts bool
	// Owner, when set, owns every entry instead of the tar's uid/gid
	// (ADD --chown). Implicit parents keep ImplicitDir's owner.
	Owner *Owner
	// RootEntry applies an entry naming the root ("/", "..") to the root
	// directory itself, as go-archive merges it onto the destination; only
	// "." and "./" are skipped. Without it every root entry is skipped: a
	// layer does not set the attributes of /.
	RootEntry bool
	// LiteralParents is go-archive's parent rule: a missing parent is
	// created where the entry's own name leads, but not through a symlink
	// that dangles (that is an error). Otherwise, as containerd's applier
	// does, missing directories are created wherever resolution leads.
	LiteralParents bool
	// ImplicitDir holds the mode, owner and mtime given to directories an
	// entry needs but the tar does not list. Nil: 0755, owned by this
	// process, the mtime the kernel leaves.
	ImplicitDir *tar.Header
	// Unprivileged skips owners, device nodes and xattrs that fail with
	// EPERM, as an unprivileged tar -x does.
	Unprivileged bool
	// BestEffortXattrs skips xattrs the filesystem refuses (EPERM,
	// ENOTSUP), as go-archive's BestEffortXattrs.
	BestEffortXattrs bool
	// ClampTimes is go-archive's time rule: the access time is the later of
	// atime and mtime, and a time before 1970 or past 2262 becomes 1970.
	ClampTimes bool
	// LinkMeta applies a hardlink entry's owner, mode, xattrs and times to
	// the inode it shares (unless that is a symlink), as go-archive does.
	LinkMeta bool
	// Record, when set, leaves files plain: no owners, modes, xattrs or
	// times on anything, and device nodes and FIFOs become empty regular
	// files. Record is called instead with each entry's rooted path
	// (symlinks resolved, "/a/b") and header, and for a regular file the
	// inode number it landed on; a caller writing the tree out again uses
	// the headers. Directories are not kept for Finish then.
	Record func(p string, hdr *tar.Header, ino uint64)
	// CreateFile, when set, makes each regular file instead of
	// d.Create(name, 0o600): it returns a descriptor, open for writing,
	// of an empty regular file with one link, no xattrs and mode 0600 or
	// less, that it put at name in d without replacing anything there
	// (an error matching fs.ErrExist when name is taken) and that nobody
	// else can reach. A caller recycles inodes with it (kiln serve: a
	// fresh inode costs far more on some filesystems than a rename).
	CreateFile func(d *rooted.Dir, name string) (int, error)
}

// Applier applies layer tars to one root directory, through descriptors
// only: every entry is created with an *at call on a handle of its parent
// directory, opened one component at a time without following symlinks,
// so no entry and no later change of the tree can make it write outside
// the root. Directory attributes are set by Finish, last, since creating
// entries changes a directory's mtime (and a read-only directory must
// still take later entries).
type Applier struct {
	root *rooted.Root
	opts Options
	w    *walker
	buf  []byte

	// dirs holds the directories to finish, by rooted path. Only
	// directories are kept: a million-file tar costs one entry per
	// directory here, not per file.
	dirs map[string]*dirMeta
	// layer holds 128-bit hashes of the paths the current tar wrote, for
	// an opaque marker to keep them (Rootfs with whiteouts only).
	layer map[[16]byte]struct{}
	// pw writes regular files during Apply (LayerDir); nil: the tar loop
	// writes them itself.
	pw *writers
	// serial turns the writers off (tests compare both ways, and so does
	// BenchmarkUnpack).
	serial bool
}

// dirMeta is what Finish sets on a directory.
type dirMeta struct {
	mode         int64
	uid, gid     int
	atime, mtime time.Time
	xattrs       map[string]string
	timesOnly    bool // LayerDir: owner, mode and xattrs are already set
}

// NewApplier returns an Applier writing into root. The caller keeps root
// open until Close.
func NewApplier(root *rooted.Root, opts Options) *Applier {
	a := &Applier{root: root, opts: opts, w: newWalker(root), dirs: map[string]*dirMeta{}}
	return a
}

// Close releases the handles the Applier holds (not the root).
func (a *Applier) Close() { a.w.close() }

func (a *Applier) rootfs() bool { return a.opts.Sink == Rootfs }

func (a *Applier) whiteouts() bool { return !(a.rootfs() && a.opts.LiteralWhiteouts) }

// Apply applies one uncompressed tar from r. It reads r to EOF, past the
// end-of-archive marker, so a caller hashing r sees every byte.
func (a *Applier) Apply(ctx context.Context, r io.Reader) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	a.buf = *bp
	defer func() { a.buf = nil }()
	if a.rootfs() && !a.opts.LiteralWhiteouts {
		a.layer = map[[16]byte]struct{}{}
		defer func() { a.layer = nil }()
	}
	// archive/tar reads each header with a 512-byte read: buffer them.
	br := bufio.NewReaderSize(r, 64<<10)
	if a.opts.Sink == LayerDir && a.opts.Record == nil && !a.serial && takeWriters() {
		a.pw = newWriters(ctx, a)
	}
	err := a.apply(ctx, br)
	if a.pw != nil {
		a.pw.stop()
		writersBusy.Store(false)
		// A queued file precedes whatever stopped the loop.
		if werr := a.pw.error(); werr != nil {
			err = werr
		}
		a.pw = nil
	}
	if err != nil {
		return err
	}
	if _, err := copyBuffer(ctx, io.Discard, br, -1, a.buf); err != nil {
		return fmt.Errorf("reading past the end of the tar: %w", err)
	}
	return nil
}

func (a *Applier) apply(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if !a.rootfs() {
				return fmt.Errorf("reading layer tar: %w", err)
			}
			return fmt.Errorf("reading tar: %w", err)
		}
		if err := a.entry(ctx, hdr, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	return nil
}

// await makes the entry naming name (and hdr's hardlink target) wait for
// the queued files it could see or change, and forgets cached handles a
// writer's replacement of a directory made stale.
func (a *Applier) await(name string, hdr *tar.Header, base string) error {
	if a.pw == nil {
		return nil
	}
	if err := a.pw.error(); err != nil {
		return err
	}
	switch {
	case base == OpaqueMarker || strings.HasPrefix(base, WhiteoutPrefix):
		if err := a.pw.wait(); err != nil {
			return err
		}
	default:
		a.pw.waitFor(name)
		if hdr.Typeflag == tar.TypeLink {
			a.pw.waitFor(rooted.Clean(hdr.Linkname))
		}
	}
	if a.pw.dirRemoved.Swap(false) {
		a.w.truncate(0)
	}
	return nil
}

func (a *Applier) mode() lookupMode {
	return lookupMode{follow: a.rootfs(), create: true, literal: a.rootfs() && a.opts.LiteralParents}
}

func (a *Applier) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // global PAX defaults; archive/tar already applies them
	}
	name := rooted.Clean(hdr.Name)
	if name == "/" {
		return a.rootEntry(hdr)
	}
	if err := checkXattrs(hdr); err != nil {
		return err
	}
	comps := rooted.Split(name)
	base, parent := comps[len(comps)-1], comps[:len(comps)-1]
	if err := a.await(name, hdr, base); err != nil {
		return err
	}

	if a.whiteouts() {
		if base == OpaqueMarker {
			return a.opaque(parent)
		}
		if n, ok := strings.CutPrefix(base, WhiteoutPrefix); ok {
			if n == "" || n == "." || n == ".." {
				return errors.New("malformed whiteout")
			}
			return a.whiteout(parent, n, hdr)
		}
	}

	depth, err := a.w.lookup(parent, a.mode(), a.madeDir)
	if err != nil {
		var missing *errMissing
		if errors.As(err, &missing) {
			return &fs.PathError{Op: "open", Path: path.Join(a.root.Dir().Name(), missing.path, base), Err: syscall.ENOENT}
		}
		return err
	}
	d := a.w.at(depth)
	p := path.Join(a.w.rel(depth), base)
	a.wrote(p)

	switch hdr.Typeflag {
	case tar.TypeDir:
		return a.mkdir(d, depth, base, p, hdr)
	case tar.TypeReg:
		if a.pw != nil {
			return a.pw.queue(ctx, a.w.ref(depth), base, p, hdr, r)
		}
		return a.writeFile(ctx, d, depth, base, p, hdr, r)
	case tar.TypeLink:
		return a.hardlink(d, depth, base, p, hdr)
	case tar.TypeSymlink:
		if err := a.create(d, depth, base, func() error { return d.Symlink(hdr.Linkname, base) }); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		made, err := a.mknod(d, depth, base, hdr)
		if err != nil || !made {
			return err
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	if a.opts.Record != nil {
		a.opts.Record(p, hdr, 0)
		return nil
	}
	return a.setMeta(d, base, hdr)
}

// rootEntry handles an entry naming the root itself.
func (a *Applier) rootEntry(hdr *tar.Header) error {
	if !a.rootfs() || !a.opts.RootEntry || path.Clean(hdr.Name) == "." {
		return nil
	}
	if hdr.Typeflag != tar.TypeDir {
		return errors.New("refusing to replace the destination directory with a non-directory")
	}
	if err := checkXattrs(hdr); err != nil {
		return err
	}
	a.recordDir("/", hdr)
	return nil
}

// wrote notes that the current tar wrote p, which an opaque marker keeps.
func (a *Applier) wrote(p string) {
	if a.layer != nil {
		a.layer[pathKey(p)] = struct{}{}
	}
}

// pathKey is a 128-bit hash of a path: a collision would need 2^64 paths,
// and the set costs 16 bytes a path, not the path.
func pathKey(p string) [16]byte {
	h := fnv.New128a()
	h.Write([]byte(p))
	var k [16]byte
	h.Sum(k[:0])
	return k
}

// madeDir handles a directory created because an entry needs it.
func (a *Applier) madeDir(parent *rooted.Dir, name, rel string) error {
	a.wrote(rel)
	imp := a.opts.ImplicitDir
	switch {
	case a.opts.Record != nil:
		h := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(rel, "/") + "/", Mode: 0o755}
		if imp != nil {
			h.Mode, h.Uid, h.Gid, h.ModTime = imp.Mode, imp.Uid, imp.Gid, imp.ModTime
		}
		a.opts.Record(rel, h, 0)
	case imp != nil:
		a.dirs[rel] = &dirMeta{mode: imp.Mode, uid: imp.Uid, gid: imp.Gid, atime: imp.ModTime, mtime: imp.ModTime}
	}
	return nil
}

// remove deletes whatever is at name in d (at chain depth depth), a whole
// tree for a directory, never following a symlink, and forgets cached
// handles it invalidates.
func (a *Applier) remove(d *rooted.Dir, depth int, name string) error {
	if a.pw != nil {
		// A tree may hold queued files.
		if err := a.pw.wait(); err != nil {
			return err
		}
	}
	if depth < len(a.w.names) && a.w.names[depth] == name {
		a.w.truncate(depth)
	}
	return d.RemoveAll(name)
}

// create runs mk, which makes a non-directory name in d; if something is
// in the way (a later entry replaces an earlier one), that is removed and
// mk runs again. Trying first saves an lstat per entry in the usual case.
func (a *Applier) create(d *rooted.Dir, depth int, name string, mk func() error) error {
	err := mk()
	if errors.Is(err, fs.ErrExist) {
		if err := a.remove(d, depth, name); err != nil {
			return err
		}
		err = mk()
	}
	return err
}

// mkdir makes the directory name, keeping one that exists (its attributes
// are then overwritten) and replacing anything else.
func (a *Applier) mkdir(d *rooted.Dir, depth int, name, p string, hdr *tar.Header) error {
	err := mkdir(d, name, 0o700)
	if errors.Is(err, fs.ErrExist) {
		st, lerr := d.Lstat(name)
		if lerr == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			err = nil
		} else if err = a.remove(d, depth, name); err == nil {
			err = mkdir(d, name, 0o700)
		}
	}
	if err != nil {
		return err
	}
	if a.opts.Record != nil {
		a.opts.Record(p, hdr, 0)
		return nil
	}
	if a.rootfs() {
		// Rootfs: Finish sets everything again once the tree is complete
		// (and, for an export, moved into place). Without privileges
		// nothing is set before, so that a read-only directory still takes
		// later entries; with them, owner, mode and xattrs are set now, so
		// that a failed extraction leaves what go-archive would.
		a.recordDir(p, hdr)
		if a.opts.Unprivileged {
			return nil
		}
		return a.setMeta(d, name, hdr)
	}
	// LayerDir runs privileged: set all but the times now, keep only the
	// times, and the memory, for Finish.
	if err := a.setMeta(d, name, hdr); err != nil {
		return err
	}
	a.dirs[p] = &dirMeta{atime: hdr.ModTime, mtime: hdr.ModTime, timesOnly: true}
	return nil
}

func (a *Applier) recordDir(p string, hdr *tar.Header) {
	m := &dirMeta{mode: hdr.Mode, uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
	m.atime = a.atime(hdr)
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, paxXattr); ok && a.keepXattr(name) {
			if m.xattrs == nil {
				m.xattrs = map[string]string{}
			}
			m.xattrs[name] = v
		}
	}
	a.dirs[p] = m
}

// writeFile creates a regular file and sets its attributes through the
// open descriptor.
func (a *Applier) writeFile(ctx context.Context, d *rooted.Dir, depth int, name, p string, hdr *tar.Header, r io.Reader) error {
	var fd int
	err := a.create(d, depth, name, func() (err error) {
		fd, err = a.createFile(d, name)
		return err
	})
	if err != nil {
		return err
	}
	err = func() error {
		defer unix.Close(fd)
		if _, err := copyBuffer(ctx, fdWriter(fd), r, -1, a.buf); err != nil {
			return d.Err("write", name, err)
		}
		if a.opts.Record != nil {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return d.Err("stat", name, err)
			}
			a.opts.Record(p, hdr, st.Ino)
			return nil
		}
		return a.fileMeta(fd, d, name, hdr)
	}()
	return err
}

// createFile makes the regular file name in d (Options.CreateFile).
func (a *Applier) createFile(d *rooted.Dir, name string) (int, error) {
	if a.opts.CreateFile != nil {
		return a.opts.CreateFile(d, name)
	}
	return d.Create(name, 0o600)
}

// hardlink links name to the entry's Linkname, which resolves inside the
// root like any entry name; its final component is never followed, and
// it must not be a directory.
func (a *Applier) hardlink(d *rooted.Dir, depth int, name, p string, hdr *tar.Header) error {
	target := rooted.Clean(hdr.Linkname)
	if target == "/" {
		return errors.New("hardlink to the root directory")
	}
	tcomps := rooted.Split(target)
	tbase := tcomps[len(tcomps)-1]
	// The entry's own directory is held by the chain: keep a handle of it
	// while the target's lookup moves the chain elsewhere.
	d, err := d.Dup()
	if err != nil {
		return err
	}
	defer d.Close()
	m := a.mode()
	m.create = false
	tdepth, err := a.w.lookup(tcomps[:len(tcomps)-1], m, nil)
	if err != nil {
		var missing *errMissing
		if errors.As(err, &missing) {
			return fmt.Errorf("hardlink target %s does not exist", hdr.Linkname)
		}
		return fmt.Errorf("hardlink target %s: %w", hdr.Linkname, err)
	}
	td := a.w.at(tdepth)
	tp := path.Join(a.w.rel(tdepth), tbase)
	st, err := td.Lstat(tbase)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hardlink target %s does not exist", hdr.Linkname)
	}
	if err != nil {
		return fmt.Errorf("hardlink target %s: %w", hdr.Linkname, err)
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return fmt.Errorf("hardlink target %s is a directory", hdr.Linkname)
	}
	if tp == p {
		return nil
	}
	// The chain may have moved: d is at an unknown depth now, so removal
	// forgets every cached handle below the root when it hits a directory.
	if err := d.Link(td, tbase, name); errors.Is(err, fs.ErrExist) {
		if a.pw != nil {
			if err := a.pw.wait(); err != nil {
				return err
			}
		}
		if err := a.w.removeAny(d, name); err != nil {
			return err
		}
		err = d.Link(td, tbase, name)
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if a.opts.Record != nil {
		a.opts.Record(p, hdr, 0)
		return nil
	}
	if !a.opts.LinkMeta || st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return nil // the inode's attributes are those of its first entry
	}
	return a.setMeta(d, name, hdr)
}

// removeAny removes name in d wherever d sits, forgetting every cached
// handle since any of them could be below name.
func (w *walker) removeAny(d *rooted.Dir, name string) error {
	st, err := d.Lstat(name)
	if err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		w.truncate(0)
	}
	return d.RemoveAll(name)
}

// mknod makes a device node or FIFO; made is false when it was skipped.
func (a *Applier) mknod(d *rooted.Dir, depth int, name string, hdr *tar.Header) (made bool, err error) {
	if a.opts.Record != nil {
		// A placeholder: the recorded header says what it is, and the
		// tree stays readable by anyone.
		return true, a.create(d, depth, name, func() error {
			fd, err := d.Create(name, 0o600)
			if err == nil {
				unix.Close(fd)
			}
			return err
		})
	}
	typ := uint32(unix.S_IFIFO)
	switch hdr.Typeflag {
	case tar.TypeChar:
		typ = unix.S_IFCHR
	case tar.TypeBlock:
		typ = unix.S_IFBLK
	}
	if typ != unix.S_IFIFO && !a.rootfs() && userns.Running() {
		// A user namespace may not create device nodes. As
		// containers/storage does, a rootless store goes without the ones
		// a base image carries (/dev of a sandbox is its own anyway); the
		// image keeps them, from the base's blob.
		return false, a.remove(d, depth, name)
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	err = a.create(d, depth, name, func() error { return d.Mknod(name, typ|0o600, dev) })
	if err != nil && typ != unix.S_IFIFO && a.opts.Unprivileged && errors.Is(err, syscall.EPERM) {
		return false, nil
	}
	return err == nil, err
}

// owner is the entry's owner, or the Owner option's.
func (a *Applier) owner(hdr *tar.Header) (int, int) {
	if a.opts.Owner != nil {
		return a.opts.Owner.UID, a.opts.Owner.GID
	}
	return hdr.Uid, hdr.Gid
}

// chownErr drops an EPERM an unprivileged applier expects.
func (a *Applier) chownErr(err error) error {
	if err != nil && a.opts.Unprivileged && errors.Is(err, syscall.EPERM) {
		return nil
	}
	return err
}

func (a *Applier) ownerErr(d *rooted.Dir, name string, uid, gid int, err error) error {
	if errors.Is(err, syscall.EINVAL) && userns.Running() {
		// The ID has no mapping in kiln's user namespace.
		return fmt.Errorf("setting owner of %s to %d:%d: %w (a rootless build maps only as many IDs as the user's ranges in /etc/subuid and /etc/subgid hold)", path.Join(d.Name(), name), uid, gid, err)
	}
	return d.Err("chown", name, err)
}

// setMeta gives name its owner, mode, xattrs and times, in that order:
// chown clears setuid bits and file capabilities, so it goes first. All
// through *at calls on d that do not follow name.
func (a *Applier) setMeta(d *rooted.Dir, name string, hdr *tar.Header) error {
	uid, gid := a.owner(hdr)
	if err := a.chownErr(unix.Fchownat(d.Fd(), name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)); err != nil {
		return a.ownerErr(d, name, uid, gid, err)
	}
	isLink := hdr.Typeflag == tar.TypeSymlink
	if !isLink {
		if err := d.Chmod(name, rooted.PermBits(uint32(hdr.Mode))); err != nil {
			return err
		}
	}
	err := a.setXattrs(hdr, isLink, func(k string, v []byte) error { return d.Lsetxattr(name, k, v) })
	if err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil // Finish sets directory times
	}
	return d.Utimes(name, a.atime(hdr), a.mtime(hdr))
}

// keepXattr says which xattrs of a tar entry the sink writes. A layer
// keeps only image content (see keepXattr); a flattened tree takes what
// the image carries but overlay bookkeeping, which would change how an
// overlay mounted over it later reads (or be refused by one).
func (a *Applier) keepXattr(name string) bool {
	if a.rootfs() {
		return !strings.HasPrefix(name, "trusted.overlay.") && !strings.HasPrefix(name, "user.overlay.")
	}
	return keepXattr(name)
}

// checkXattrs refuses an entry carrying more xattrs, or larger ones, than
// a file can hold, before anything is created for it.
func checkXattrs(hdr *tar.Header) error {
	n := 0
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if n++; n > MaxXattrCount {
			return fmt.Errorf("more than %d extended attributes: the archive is not one kiln can apply", MaxXattrCount)
		}
		if len(v) > MaxXattrSize {
			return fmt.Errorf("extended attribute %s is %d bytes, more than the %d Linux allows: the archive is not one kiln can apply", name, len(v), MaxXattrSize)
		}
	}
	return nil
}

func (a *Applier) setXattrs(hdr *tar.Header, isLink bool, set func(name string, v []byte) error) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok || !a.keepXattr(name) {
			continue
		}
		err := set(name, []byte(v))
		if err == nil {
			continue
		}
		switch {
		case isLink && errors.Is(err, syscall.EPERM):
			continue // the kernel allows no user.* xattrs on symlinks
		case (a.opts.Unprivileged || a.opts.BestEffortXattrs) && errors.Is(err, syscall.EPERM):
			continue // trusted.* and security.* need privileges
		case a.opts.BestEffortXattrs && errors.Is(err, syscall.ENOTSUP):
			continue
		}
		return err
	}
	return nil
}

func (a *Applier) mtime(hdr *tar.Header) time.Time {
	if a.opts.ClampTimes {
		return clampTime(hdr.ModTime)
	}
	return hdr.ModTime
}

func (a *Applier) atime(hdr *tar.Header) time.Time {
	at := hdr.AccessTime
	if a.opts.ClampTimes {
		if at.Before(hdr.ModTime) {
			at = hdr.ModTime
		}
		return clampTime(at)
	}
	if at.IsZero() {
		return hdr.ModTime
	}
	return at
}

func clampTime(t time.Time) time.Time {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(0, 1<<63-1)) {
		return time.Unix(0, 0)
	}
	return t
}

// whiteout applies .wh.NAME in the directory parent.
func (a *Applier) whiteout(parent []string, name string, hdr *tar.Header) error {
	m := a.mode()
	if a.rootfs() {
		// Nothing to delete where the directory does not exist.
		m.create = false
	}
	depth, err := a.w.lookup(parent, m, a.madeDir)
	var missing *errMissing
	if errors.As(err, &missing) {
		return nil
	}
	if err != nil {
		return err
	}
	d := a.w.at(depth)
	if err := a.remove(d, depth, name); err != nil {
		return err
	}
	if a.rootfs() {
		return nil
	}
	if err := d.Mknod(name, unix.S_IFCHR, 0); err != nil {
		return err
	}
	return d.Utimes(name, hdr.ModTime, hdr.ModTime)
}

// opaque applies DIR/.wh..wh..opq, dir given by its components.
func (a *Applier) opaque(dir []string) error {
	if !a.rootfs() {
		depth, err := a.w.lookup(dir, a.mode(), a.madeDir)
		if err != nil {
			return err
		}
		if err := a.w.at(depth).SetXattr(opaqueXattr(), []byte("y")); err != nil {
			return fmt.Errorf("marking %s opaque: %w", a.w.rel(depth), err)
		}
		return nil
	}
	m := a.mode()
	m.create = false
	depth, err := a.w.lookup(dir, m, nil)
	var missing *errMissing
	if errors.As(err, &missing) {
		return nil
	}
	if err != nil {
		return err
	}
	return a.keepOnlyLayer(depth)
}

// keepOnlyLayer deletes what the directory at chain depth depth holds from
// earlier tars, keeping this tar's entries wherever they sit: the marker
// hides everything below it that came from below, whatever the order of
// the entries. A directory this tar did not write but wrote into stays,
// holding only this tar's entries; a symlink is never entered.
func (a *Applier) keepOnlyLayer(depth int) error {
	rel := a.w.rel(depth)
	names, err := a.w.at(depth).Names()
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		d := a.w.at(depth)
		_, inLayer := a.layer[pathKey(path.Join(rel, n))]
		st, err := d.Lstat(n)
		if err != nil {
			return err
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			if !inLayer {
				if err := a.remove(d, depth, n); err != nil {
					return err
				}
			}
			continue
		}
		sub, err := a.w.lookup(append(rooted.Split(rel), n), lookupMode{}, nil)
		if err != nil {
			return err
		}
		if err := a.keepOnlyLayer(sub); err != nil {
			return err
		}
		if inLayer {
			continue
		}
		left, err := a.w.at(sub).Names()
		if err != nil {
			return err
		}
		if len(left) == 0 {
			if err := a.remove(a.w.at(depth), depth, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Finish sets the attributes of every directory the tars made: owner,
// xattrs, mode and times, deepest first so that a read-only directory is
// closed only after everything under it. root is where the tree is now:
// the root it was applied to, or another one it was moved to.
//
// Each directory is found again from root one component at a time without
// following any symlink, and changed through *at calls on its verified
// parent: a directory that a later layer replaced by a symlink (or
// anything else) is skipped, never followed.
func (a *Applier) Finish(root *rooted.Root) error {
	paths := make([]string, 0, len(a.dirs))
	for p := range a.dirs {
		paths = append(paths, p)
	}
	// Reverse byte order puts every path after all paths below it.
	slices.SortFunc(paths, func(x, y string) int { return strings.Compare(y, x) })
	w := newWalker(root)
	defer w.close()
	for _, p := range paths {
		m := a.dirs[p]
		if p == "/" {
			if err := a.finishDir(root.Dir(), "", m); err != nil {
				return err
			}
			continue
		}
		comps := rooted.Split(p)
		depth, err := w.lookup(comps[:len(comps)-1], lookupMode{}, nil)
		if err != nil {
			continue // gone, or a symlink now: not ours to follow
		}
		d, name := w.at(depth), comps[len(comps)-1]
		st, err := d.Lstat(name)
		if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			continue
		}
		if err := a.finishDir(d, name, m); err != nil {
			return err
		}
	}
	clear(a.dirs)
	return nil
}

// finishDir sets m on name in d, or on d itself when name is "".
func (a *Applier) finishDir(d *rooted.Dir, name string, m *dirMeta) error {
	if !m.timesOnly {
		uid, gid := m.uid, m.gid
		if a.opts.Owner != nil {
			uid, gid = a.opts.Owner.UID, a.opts.Owner.GID
		}
		var err error
		if name == "" {
			err = d.SetOwner(uid, gid)
		} else {
			err = d.Lchown(name, uid, gid)
		}
		if err := a.chownErr(err); err != nil {
			return err
		}
		for k, v := range m.xattrs {
			var err error
			if name == "" {
				err = d.SetXattr(k, []byte(v))
			} else {
				err = d.Lsetxattr(name, k, []byte(v))
			}
			switch {
			case err == nil:
			case (a.opts.Unprivileged || a.opts.BestEffortXattrs) && errors.Is(err, syscall.EPERM):
			case a.opts.BestEffortXattrs && errors.Is(err, syscall.ENOTSUP):
			default:
				return err
			}
		}
		if name == "" {
			err = d.SetMode(rooted.PermBits(uint32(m.mode)))
		} else {
			err = d.Chmod(name, rooted.PermBits(uint32(m.mode)))
		}
		if err != nil {
			return err
		}
	}
	atime, mtime := m.atime, m.mtime
	if a.opts.ClampTimes {
		atime, mtime = clampTime(atime), clampTime(mtime)
	}
	if name == "" {
		return d.SetTimes(atime, mtime)
	}
	return d.Utimes(name, atime, mtime)
}

type fdWriter int

func (fd fdWriter) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := unix.Write(int(fd), p[written:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// opaqueXattr is the xattr that marks an opaque directory for the
// overlay mounts of this process: user.overlay.opaque in a user
// namespace, where overlay is mounted with userxattr.
func opaqueXattr() string {
	if userns.Running() {
		return UserOpaqueXattr
	}
	return OpaqueXattr
}

// Unpack reads an uncompressed layer tar from r and applies it to dir in
// overlay format (the LayerDir sink), so that dir can serve directly as
// an overlay lowerdir.
//
// Ownership, permission bits (setuid/setgid/sticky included), the layer's
// xattrs and mtimes are restored; directory mtimes are set last. Missing
// parent directories are created 0755. Names are contained in dir ("../x"
// and "/x" land at dir/x); a parent that is a symlink is refused, and so
// is a hardlink through one, out of dir or to a directory. The root entry
// ("./") is skipped: a layer does not set the attributes of /.
//
// Unpack needs root (mknod, chown, trusted.* xattrs), or a user namespace
// (device nodes are then left out). It reads r to EOF, past the
// end-of-archive marker, so a caller hashing r sees every byte.
//
// Regular files are written by a few goroutines while the tar is read on
// (see writers_linux.go); the result is the same as writing them in tar
// order. When Unpack fails, dir holds part of the layer — possibly files
// that come after the failed entry — and is to be discarded.
func Unpack(ctx context.Context, r io.Reader, dir string) error {
	root, err := rooted.Open(dir)
	if err != nil {
		return fmt.Errorf("unpacking layer: %w", err)
	}
	defer root.Close()
	a := NewApplier(root, Options{Sink: LayerDir})
	defer a.Close()
	if err := a.Apply(ctx, r); err != nil {
		return fmt.Errorf("unpacking layer: %w", err)
	}
	if err := a.Finish(root); err != nil {
		return fmt.Errorf("unpacking layer: %w", err)
	}
	return nil
}
