package cache

import (
	"io/fs"
	"syscall"
)

// fileID identifies an inode, so that hardlinks count once.
type fileID struct{ dev, ino uint64 }

// diskSize is the space fi's file occupies: allocated blocks, not the
// apparent size, since sparse files and small files differ a lot; zero for
// a further link to an inode already counted.
func diskSize(fi fs.FileInfo, seen map[fileID]bool) int64 {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.Size()
	}
	if st.Nlink > 1 {
		id := fileID{uint64(st.Dev), st.Ino}
		if seen[id] {
			return 0
		}
		seen[id] = true
	}
	return st.Blocks * 512
}
