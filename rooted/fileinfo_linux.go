package rooted

import (
	"io/fs"
	"path"
	"syscall"
	"time"
)

// FileInfo wraps a Stat_t from this package as an fs.FileInfo, the way
// os.Lstat would report it; Sys returns the *syscall.Stat_t.
func FileInfo(name string, st *syscall.Stat_t) fs.FileInfo {
	return &fileInfo{name: path.Base(name), st: st}
}

type fileInfo struct {
	name string
	st   *syscall.Stat_t
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.st.Size }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi *fileInfo) IsDir() bool        { return fi.Mode().IsDir() }
func (fi *fileInfo) Sys() any           { return fi.st }

// Mode converts st_mode as os does.
func (fi *fileInfo) Mode() fs.FileMode { return FileMode(fi.st.Mode) }

// FileMode is st_mode in Go's spelling, as os.Lstat gives it.
func FileMode(mode uint32) fs.FileMode {
	m := PermBits(mode)
	switch mode & syscall.S_IFMT {
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	}
	return m
}

// PermBits turns the permission and setuid, setgid and sticky bits of an
// st_mode (or a tar header's mode) into Go's spelling, which Chmod takes.
func PermBits(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}
