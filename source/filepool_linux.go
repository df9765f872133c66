package source

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// FilePool keeps the inodes of unpacked contexts that are done with, as
// empty files, for the next unpacking to reuse: on ext4 without a
// journal, creating a file scans past every inode freed in the last
// minute, so a server unpacking a 10,000-file context for each build
// spends most of its time there (measured: 10,000 files take 1.2–1.5 s
// to create, 0.25 s to take from a pool by rename). A file joins the
// pool emptied, mode 0600 and with one link; it leaves it checked again
// (through its descriptor), and only if it carries no xattr, so nothing
// of a former context reaches the next one. The pool's directory is a
// new one of its own, on the filesystem of the contexts.
type FilePool struct {
	parent, prefix string
	max            int

	mu    sync.Mutex
	dir   string // the pool's directory, made when first filled
	fd    int    // dir (O_PATH), -1 until filled
	names []string
	next  uint64
	off   bool // the filesystem refuses what the pool needs
}

// NewFilePool returns a pool keeping up to max files in a directory it
// makes in parent (os.MkdirTemp with prefix) when it is first filled.
func NewFilePool(parent, prefix string, max int) *FilePool {
	return &FilePool{parent: parent, prefix: prefix, max: max, fd: -1}
}

// Remove removes the pool's directory and forgets its files.
func (p *FilePool) Remove() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
	p.reset()
}

// Len is the number of files in the pool.
func (p *FilePool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.names)
}

// Close releases the pool's directory handle (not its files).
func (p *FilePool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset()
}

// reset forgets the pool's files (their directory was removed, or is
// unusable): mu held.
func (p *FilePool) reset() {
	if p.fd >= 0 {
		unix.Close(p.fd)
	}
	p.fd, p.names, p.dir = -1, nil, ""
}

// dirFd returns the pool's directory, made anew when it was removed (a
// prune empties the store's tmp): mu held.
func (p *FilePool) dirFd() (int, error) {
	if p.fd >= 0 {
		var st unix.Stat_t
		if err := unix.Fstat(p.fd, &st); err == nil && st.Nlink > 0 {
			return p.fd, nil
		}
		p.reset()
	}
	dir, err := os.MkdirTemp(p.parent, p.prefix)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		return -1, err
	}
	p.dir, p.fd = dir, fd
	return fd, nil
}

// Fill moves the regular files of the tree at dir (one link each) into
// the pool, emptied, until it holds its maximum; the caller removes what
// is left of dir. It never follows a symlink.
func (p *FilePool) Fill(dir string) {
	root, err := rooted.Open(dir)
	if err != nil {
		return
	}
	defer root.Close()
	p.fill(root.Dir())
}

func (p *FilePool) fill(d *rooted.Dir) bool {
	names, err := d.Names()
	if err != nil {
		return true
	}
	for _, name := range names {
		st, err := d.Lstat(name)
		if err != nil {
			continue
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			sub, err := d.OpenDir(name)
			if err != nil {
				continue
			}
			more := p.fill(sub)
			sub.Close()
			if !more {
				return false
			}
		case syscall.S_IFREG:
			if st.Nlink != 1 {
				continue
			}
			if !p.put(d, name) {
				return false
			}
		}
	}
	return true
}

// put moves the file name in d into the pool; false once the pool is
// full or unusable.
func (p *FilePool) put(d *rooted.Dir, name string) bool {
	fd, err := unix.Openat(d.Fd(), name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return true // not ours to take (a mode without write access)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		return true
	}
	if unix.Ftruncate(fd, 0) != nil || unix.Fchmod(fd, 0o600) != nil {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.off || len(p.names) >= p.max {
		return false
	}
	pfd, err := p.dirFd()
	if err != nil {
		return false
	}
	pname := strconv.FormatUint(p.next, 36)
	p.next++
	if err := unix.Renameat(d.Fd(), name, pfd, pname); err != nil {
		if errors.Is(err, unix.EXDEV) {
			p.off = true
			return false
		}
		return true
	}
	p.names = append(p.names, pname)
	return true
}

// take pops a file of the pool: its name and the pool's directory.
func (p *FilePool) take() (string, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.off || p.fd < 0 || len(p.names) == 0 {
		return "", -1, false
	}
	n := p.names[len(p.names)-1]
	p.names = p.names[:len(p.names)-1]
	return n, p.fd, true
}

// giveBack returns name, still in the pool's directory, to the pool.
func (p *FilePool) giveBack(name string, pfd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd == pfd {
		p.names = append(p.names, name)
	}
}

// Create is a layer.Options.CreateFile: a file of the pool, checked and
// renamed to name in d, else a new one.
func (p *FilePool) Create(d *rooted.Dir, name string) (int, error) {
	for {
		pname, pfd, ok := p.take()
		if !ok {
			return d.Create(name, 0o600)
		}
		fd, err := unix.Openat(pfd, pname, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			// gone (a prune emptied tmp): the others too
			p.mu.Lock()
			if p.fd == pfd {
				p.reset()
			}
			p.mu.Unlock()
			continue
		}
		if !p.reusable(fd) {
			unix.Close(fd)
			unix.Unlinkat(pfd, pname, 0)
			continue
		}
		err = unix.Renameat2(pfd, pname, d.Fd(), name, unix.RENAME_NOREPLACE)
		if err == nil {
			return fd, nil
		}
		unix.Close(fd)
		if errors.Is(err, unix.EEXIST) {
			p.giveBack(pname, pfd)
			return -1, d.Err("open", name, fs.ErrExist)
		}
		unix.Unlinkat(pfd, pname, 0)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
			// RENAME_NOREPLACE unsupported, another filesystem: no
			// pool here
			p.mu.Lock()
			p.off = true
			p.mu.Unlock()
			continue
		}
		// a new file says what is wrong (no space, too many links)
		return d.Create(name, 0o600)
	}
}

// reusable checks, through the descriptor, that fd is what Fill put in
// the pool: an empty regular file, one link, mode 0600, no xattrs (an
// ACL is one).
func (p *FilePool) reusable(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Size != 0 || st.Mode&0o7777 != 0o600 {
		return false
	}
	n, err := unix.Flistxattr(fd, nil)
	return err == nil && n == 0 || errors.Is(err, unix.ENOTSUP)
}
