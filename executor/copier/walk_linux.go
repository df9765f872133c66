package copier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// fileID identifies an inode, to keep hardlinks among copied files.
type fileID struct{ dev, ino uint64 }

// firstCopy is where a multiply-linked source inode was first copied.
type firstCopy struct {
	dst     string // in-root destination path
	content string // its content digest, when verifying
}

// copier copies the matches of one source argument. Every file is
// reached through a handle of its parent directory, opened one component
// at a time without following symlinks (package rooted), on both sides.
type copier struct {
	src       *srcTree
	droot     *rooted.Root // the destination
	chown     *owner       // --chown; nil keeps the source owner (see owner)
	mode      *chmodSpec   // --chmod; nil keeps the source mode
	fromStage bool
	topMeta   bool // Op.TopMeta
	unpack    bool // ADD: extract local archives
	// verify, when set, checks every entry read against the entries the
	// step's key was computed from.
	verify *verifier
	// links maps a multiply-linked source inode to its first copy, for
	// the current match.
	links map[fileID]firstCopy
	// pending are excluded directories entered because an exception may
	// keep something inside; they are created when that happens.
	pending []*pendingDir
	// pool, when set, copies each directory's regular files and then sets
	// its metadata in one job beside the walk: jobs for different
	// directories run at once (creating files in one directory is
	// serialised by the kernel, in different ones it is not).
	pool *filePool
	// batch collects the regular files of the directory being walked,
	// for its job.
	batch *dirBatch
	// sel is the source's --exclude/--parents selection (nil: none),
	// matched against paths relative to topRel, the in-root path of the
	// match being copied.
	sel    *selection
	topRel string
	// selPending are the lazy directories Select has entered but not
	// reported yet, outermost first.
	selPending []*pendingSel
	// direct, when set, fills the directories this copy made through the
	// overlay's upper directory.
	direct *direct
}

// pendingSel is a lazy directory Select reports once something below it
// is reported, as the copy makes it then.
type pendingSel struct {
	source, rel string
	fi          fs.FileInfo
	dir         *rooted.Dir
	name        string
	done        bool
}

// relToTop is rel relative to the match being copied, as fsutil's copy
// matches patterns.
func (c *copier) relToTop(rel string) string {
	if c.topRel == "/" {
		return strings.TrimPrefix(rel, "/")
	}
	return strings.TrimPrefix(rel, c.topRel+"/")
}

// node is one entry addressed through its parent directory's handle, or a
// root directory itself (name "").
type node struct {
	dir  *rooted.Dir
	name string
}

func (n node) rel() string { return pathIn(n.dir, n.name) }

// selfPath names the directory itself through its descriptor, for the few
// calls that have no *at form taking an empty name.
func (n node) selfPath() string { return "/proc/self/fd/" + strconv.Itoa(n.dir.Fd()) }

// lazyDir is a destination directory whose handle exists once it is made.
// upper: the handle is of its twin in the overlay's upper directory.
type lazyDir struct {
	d     *rooted.Dir
	upper bool
}

// pendingDir is an excluded directory entered but not made yet.
type pendingDir struct {
	parent  *lazyDir // made before this one
	name    string
	self    *lazyDir // set when made
	made    bool
	created bool
	// rel and fi are its source entry, checked against the key's entries
	// only when it is made: the key, like the copy, holds an excluded
	// directory only as the parent of something kept.
	rel string
	fi  fs.FileInfo
}

// errReplaceDir is fsutil's refusal to put a file where a directory is.
var errReplaceDir = errors.New("cannot replace a directory with a file")

// errNotDir is fsutil's refusal to merge a directory onto a non-directory.
var errNotDir = errors.New("cannot copy a directory onto a non-directory")

// bufPoolCopy holds the buffers a verified copy reads through.
var bufPoolCopy = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// topState is the .dockerignore verdict of a copied source itself.
func (c *copier) topState(srcRel string, fi fs.FileInfo) (matchState, error) {
	if c.src.pm == nil || srcRel == "/" {
		return matchState{}, nil
	}
	parent, err := c.src.dirState(path.Dir(srcRel))
	if err != nil {
		return matchState{}, err
	}
	return c.src.child(parent, srcRel, fi.IsDir())
}

// copyNode copies one source entry to the entry name of the destination
// directory parent (name "" is parent itself, a root). top is the source
// named in the Dockerfile (after wildcards): when it is a directory, its
// contents are copied and the destination itself keeps its metadata but
// for timestamps.
func (c *copier) copyNode(s node, fi fs.FileInfo, st matchState, parent *lazyDir, name string, top bool) error {
	if fi.IsDir() {
		return c.copyDir(s, fi, st, parent, name, top)
	}
	if err := c.makePending(); err != nil {
		return err
	}
	d := node{dir: parent.d, name: name}
	if d.name == "" {
		return &fs.PathError{Op: "copy", Path: d.rel(), Err: errReplaceDir}
	}
	if dst, err := d.dir.Lstat(d.name); err == nil {
		if dst.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			return &fs.PathError{Op: "copy", Path: d.rel(), Err: errReplaceDir}
		}
		if err := d.dir.Remove(d.name); err != nil {
			return err
		}
	} else if !isNotExist(err) {
		return err
	}

	sys := fi.Sys().(*syscall.Stat_t)
	content, link := "", ""
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		id := fileID{dev: sys.Dev, ino: sys.Ino}
		if first, ok := c.links[id]; ok && sys.Nlink > 1 {
			// The first copy is in the upper directory too, whichever
			// way it was written: link within the tree d is in.
			root := c.droot
			if parent.upper {
				root = c.direct.upper
			}
			fd, fname, err := root.Parent(first.dst)
			if err != nil {
				return err
			}
			err = d.dir.Link(fd, fname, d.name)
			fd.Close()
			if err != nil {
				return err
			}
			content = first.content
			break
		}
		if sys.Nlink <= 1 && c.batch != nil {
			// Nothing later depends on this file: its directory's job
			// copies it. Its place in the key's order is checked now,
			// its bytes when the job has read them.
			e, err := c.verify.claim(s.rel())
			if err != nil {
				return err
			}
			return c.batch.add(c.pool, func() error { return c.copyFile(s, fi, d, e) })
		}
		var err error
		if content, err = c.copyFileData(s, d); err != nil {
			return err
		}
		if sys.Nlink > 1 {
			c.links[id] = firstCopy{dst: d.rel(), content: content}
		}
	case mode&fs.ModeSymlink != 0:
		var err error
		if link, err = s.dir.Readlink(s.name); err != nil {
			return err
		}
		if err := d.dir.Symlink(link, d.name); err != nil {
			return err
		}
	default:
		m := sys.Mode
		if m&unix.S_IFMT == unix.S_IFSOCK {
			// A socket cannot be recreated; fsutil leaves an empty file.
			m &^= unix.S_IFMT
		}
		if err := d.dir.Mknod(d.name, m, sys.Rdev); err != nil {
			return err
		}
	}
	if err := c.verify.check(s.rel(), fi, content, link); err != nil {
		return err
	}
	return c.applyMeta(s, fi, d)
}

// copyDir copies a directory and what it holds. Like fsutil, an existing
// directory below the top is merged and takes the source's metadata; the top
// (dest itself) keeps its mode and owner and only takes the timestamps.
func (c *copier) copyDir(s node, fi fs.FileInfo, st matchState, parent *lazyDir, name string, top bool) (err error) {
	// An excluded directory below the top is in BuildKit's context only as
	// the parent of something an exception keeps: create it lazily.
	lazy := !top && (st.excluded || st.sel.lazy)
	if !lazy {
		// the lazy directories above it come first, in the key's order too
		if err := c.makePending(); err != nil {
			return err
		}
		if err := c.verify.check(s.rel(), fi, "", ""); err != nil {
			return err
		}
	}
	// With a pool, the directory's regular files and then its own
	// metadata are one job, which owns sdir and self's handle once it is
	// submitted (handedOff).
	handedOff := false
	self := &lazyDir{}
	defer func() {
		if !handedOff {
			self.d.Close()
		}
	}()
	var pd *pendingDir
	created := false
	if lazy {
		pd = &pendingDir{parent: parent, name: name, self: self, rel: s.rel(), fi: fi}
		c.pending = append(c.pending, pd)
	} else {
		if err := c.makePending(); err != nil {
			return err
		}
		var err error
		if self.d, created, err = makeDir(node{dir: parent.d, name: name}); err != nil {
			return err
		}
		c.direct.entered(parent, self, created)
	}

	sdir := s.dir
	if s.name != "" || c.pool != nil {
		var err error
		if s.name != "" {
			sdir, err = s.dir.OpenDir(s.name)
		} else {
			sdir, err = s.dir.Dup()
		}
		if err != nil {
			return err
		}
		defer func() {
			if !handedOff {
				sdir.Close()
			}
		}()
	}
	batch := &dirBatch{}
	// outer is the batch of the directory holding this one, whose job
	// sets its times only after this one's is done: copying into an
	// existing directory copies it up into the overlay's upper directory,
	// which changes its parent's times.
	var outer *dirBatch
	if c.pool != nil {
		outer = c.batch
		c.batch = batch
		defer func() { c.batch = outer }()
		defer func() {
			if err != nil && !handedOff {
				// The handles are closed next: no job may still use them.
				batch.parts.Wait()
				// A failed copy leaves what the walk had reached, as
				// without a pool: the files before the failing entry.
				runFiles(batch.files)
			}
		}()
	}
	names, err := sdir.Names()
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, cname := range names {
		if isWhiteoutName(cname) {
			continue
		}
		cst, err := sdir.Lstat(cname)
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return err
		}
		if rooted.IsWhiteout(cst) {
			continue
		}
		cfi := rooted.FileInfo(cname, cst)
		var cms matchState
		if c.src.pm != nil {
			if cms, err = c.src.child(st, pathIn(sdir, cname), cfi.IsDir()); err != nil {
				return err
			}
			if cms.excluded && (!cfi.IsDir() || cms.pruned) {
				continue
			}
		}
		if c.sel != nil {
			xs, skip, err := c.sel.child(st.sel, c.relToTop(pathIn(sdir, cname)), cfi.IsDir())
			if err != nil {
				return err
			}
			if skip {
				continue
			}
			cms.sel = xs
		}
		if err := c.copyNode(node{dir: sdir, name: cname}, cfi, cms, self, cname, false); err != nil {
			return err
		}
	}

	if lazy {
		c.pending = c.pending[:len(c.pending)-1]
		if !pd.made {
			return nil
		}
		created = pd.created
	}
	meta := func(s node, parent *rooted.Dir) error {
		d := node{dir: parent, name: name}
		if created || !top || c.topMeta {
			return c.applyMeta(s, fi, d)
		}
		return setTimes(d, fi)
	}
	if c.pool == nil {
		return meta(s, parent.d)
	}
	// The job outlives this call and the callers' handles: it gets its
	// own of the source's and the destination's parents.
	sparent, err := s.dir.Dup()
	if err != nil {
		return err
	}
	dparent, err := parent.d.Dup()
	if err != nil {
		sparent.Close()
		return err
	}
	handedOff = true
	dself := self.d
	closeAll := func() {
		sparent.Close()
		dparent.Close()
		sdir.Close()
		dself.Close()
	}
	job := func() error {
		defer closeAll()
		if outer != nil {
			defer outer.parts.Done()
		}
		// Files and subdirectories first: creating one changes the
		// directory's times. A subdirectory's job was queued before this
		// one (the walk queues a directory after what it holds), so a
		// worker is on it already: the wait cannot hold up the queue.
		err := runFiles(batch.files)
		batch.parts.Wait()
		if err != nil {
			return err
		}
		return meta(node{dir: sparent, name: s.name}, dparent)
	}
	if outer != nil {
		outer.parts.Add(1)
	}
	if err := c.pool.run(job); err != nil {
		if outer != nil {
			outer.parts.Done() // not queued
		}
		closeAll()
		return err
	}
	return nil
}

// makePending creates the excluded directories entered so far, now that
// something inside them is copied, and opens their handles. Each one's
// parent is made before it: the list runs from the top down.
func (c *copier) makePending() error {
	for _, pd := range c.pending {
		if pd.made {
			continue
		}
		if err := c.verify.check(pd.rel, pd.fi, "", ""); err != nil {
			return err
		}
		d, created, err := makeDir(node{dir: pd.parent.d, name: pd.name})
		if err != nil {
			return err
		}
		pd.self.d = d
		c.direct.entered(pd.parent, pd.self, created)
		pd.made, pd.created = true, created
	}
	return nil
}

// makeDir creates a directory to copy into, or accepts an existing one,
// and opens it. Its final mode, owner and times are set after its contents
// are copied.
func makeDir(d node) (*rooted.Dir, bool, error) {
	if d.name == "" {
		h, err := d.dir.Dup()
		return h, false, err
	}
	created := false
	st, err := d.dir.Lstat(d.name)
	switch {
	case err == nil && st.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		return nil, false, &fs.PathError{Op: "copy", Path: d.rel(), Err: errNotDir}
	case err != nil && !isNotExist(err):
		return nil, false, err
	case err != nil:
		if err := d.dir.Mkdir(d.name, 0o700); err != nil {
			return nil, false, err
		}
		created = true
	}
	h, err := d.dir.OpenDir(d.name)
	return h, created, err
}

// owner of a copied entry: --chown, else the source owner for COPY --from,
// else root — BuildKit's client resets uid/gid to 0 when it sends the
// build context (client/solve.go prepareSyncedFiles), and the copy keeps
// what it receives.
func (c *copier) ownerOf(sys *syscall.Stat_t) (int, int) {
	switch {
	case c.chown != nil:
		return c.chown.uid, c.chown.gid
	case c.fromStage:
		return int(sys.Uid), int(sys.Gid)
	}
	return 0, 0
}

// applyMeta is fsutil's copyFileInfo then copyXAttrs: owner first (chown
// clears setuid/setgid and file capabilities), then mode, timestamps, and
// extended attributes last. Each acts through d's parent handle on d's
// name, without following it.
func (c *copier) applyMeta(s node, fi fs.FileInfo, d node) error {
	sys := fi.Sys().(*syscall.Stat_t)
	uid, gid := c.ownerOf(sys)
	if d.name == "" {
		if err := unix.Fchownat(d.dir.Fd(), "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
			return &fs.PathError{Op: "chown", Path: d.rel(), Err: err}
		}
	} else if err := d.dir.Lchown(d.name, uid, gid); err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		m := toBits(fi.Mode())
		if c.mode != nil {
			m = c.mode.apply(fi.Mode())
		}
		if d.name == "" {
			if err := unix.Chmod(d.selfPath(), m); err != nil {
				return &fs.PathError{Op: "chmod", Path: d.rel(), Err: err}
			}
		} else if err := d.dir.Chmod(d.name, bitsMode(m)); err != nil {
			return err
		}
	}
	if err := setTimes(d, fi); err != nil {
		return err
	}
	return copyXattrs(s, d)
}

// bitsMode converts chmod(1) bits to a Go file mode.
func bitsMode(b uint32) fs.FileMode {
	m := fs.FileMode(b & 0o777)
	if b&bitSetuid != 0 {
		m |= fs.ModeSetuid
	}
	if b&bitSetgid != 0 {
		m |= fs.ModeSetgid
	}
	if b&bitSticky != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// setTimes gives d the access and modification times of fi, to the
// nanosecond, without following a symlink.
func setTimes(d node, fi fs.FileInfo) error {
	sys := fi.Sys().(*syscall.Stat_t)
	if d.name == "" {
		ts := []unix.Timespec{
			{Sec: sys.Atim.Sec, Nsec: sys.Atim.Nsec},
			{Sec: sys.Mtim.Sec, Nsec: sys.Mtim.Nsec},
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, d.selfPath(), ts, 0); err != nil {
			return &fs.PathError{Op: "utimes", Path: d.rel(), Err: err}
		}
		return nil
	}
	return d.dir.Lutimes(d.name, time.Unix(sys.Atim.Sec, sys.Atim.Nsec), time.Unix(sys.Mtim.Sec, sys.Mtim.Nsec))
}

// copyFile is a regular file's copy on a worker: its bytes, checked
// against the key's entry e when verifying, then its metadata.
func (c *copier) copyFile(s node, fi fs.FileInfo, d node, e *Entry) error {
	content, err := c.copyFileData(s, d)
	if err != nil {
		return err
	}
	if e != nil && EntrySum(Record(s.rel(), fi, content, "")) != e.Sum {
		return &ContextChangedError{Path: relName(s.rel())}
	}
	return c.applyMeta(s, fi, d)
}

// copyFileData copies a regular file's bytes into a new file and returns
// their digest when the copy is verified. os.File's ReadFrom uses
// copy_file_range (a reflink or in-kernel copy), falling back to sendfile
// or a read/write loop; a verified copy reads the bytes through a hash.
func (c *copier) copyFileData(s node, d node) (string, error) {
	in, err := s.dir.OpenRegular(s.name)
	if err != nil {
		return "", err
	}
	defer in.Close()
	// O_EXCL: the name was just cleared, so anything there now appeared
	// behind our back and must not be written through.
	out, err := d.dir.Open(d.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	var h hash.Hash
	if c.verify != nil {
		h = sha256.New()
		bp := bufPoolCopy.Get().(*[]byte)
		err = copyHashing(out, h, in, *bp)
		bufPoolCopy.Put(bp)
	} else {
		_, err = out.ReadFrom(in)
	}
	if err != nil {
		out.Close()
		return "", fmt.Errorf("copying %s: %w", s.rel(), err)
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	if h == nil {
		return "", nil
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyHashing copies in to out through buf, hashing the bytes as they
// pass. A plain loop: io.CopyBuffer would hand the copy to os.File's
// WriteTo, which allocates a buffer of its own per file.
func copyHashing(out io.Writer, h hash.Hash, in io.Reader, buf []byte) error {
	for {
		n, err := in.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, werr := out.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// listXattrs, getXattr and setXattr act on a node by its parent handle and
// name, or, for a root itself, through its descriptor.
func listXattrs(n node) ([]string, error) {
	if n.name != "" {
		return n.dir.Llistxattr(n.name)
	}
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		k, err := unix.Listxattr(n.selfPath(), buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "listxattr", Path: n.rel(), Err: err}
		}
		var names []string
		start := 0
		for i := 0; i < k; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

func getXattr(n node, attr string) ([]byte, error) {
	if n.name != "" {
		return n.dir.Lgetxattr(n.name, attr)
	}
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		k, err := unix.Getxattr(n.selfPath(), attr, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "getxattr " + attr, Path: n.rel(), Err: err}
		}
		return buf[:k], nil
	}
}

func setXattr(n node, attr string, val []byte) error {
	if n.name != "" {
		return n.dir.Lsetxattr(n.name, attr, val)
	}
	if err := unix.Setxattr(n.selfPath(), attr, val, 0); err != nil {
		return &fs.PathError{Op: "setxattr " + attr, Path: n.rel(), Err: err}
	}
	return nil
}

// copyXattrs copies the extended attributes of s to d, such as
// security.capability and user.*. overlayfs' own trusted.overlay.* are
// bookkeeping of the source mount, not content. Like BuildKit, an
// attribute the destination refuses (no support, not permitted) is
// skipped rather than failing the build.
func copyXattrs(s, d node) error {
	names, err := listXattrs(s)
	if err != nil {
		if ignorableXattrErr(err) {
			return nil
		}
		return err
	}
	for _, name := range names {
		if len(name) >= len("trusted.overlay.") && name[:len("trusted.overlay.")] == "trusted.overlay." {
			continue
		}
		val, err := getXattr(s, name)
		if err != nil {
			if ignorableXattrErr(err) || errors.Is(err, unix.ENODATA) {
				continue
			}
			return err
		}
		if err := setXattr(d, name, val); err != nil {
			if ignorableXattrErr(err) {
				continue
			}
			return err
		}
	}
	return nil
}

func ignorableXattrErr(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}
