package cache

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The store's scratch directory carries ext4's "top of hierarchy" flag, so
// that a step's scratch is not placed among the inodes a prune just freed
// (spreadSubdirs). Elsewhere the flag is refused and nothing else changes.
func TestScratchSpreadOnExt4(t *testing.T) {
	root := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(root, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type != unix.EXT4_SUPER_MAGIC {
		t.Skipf("%s is not ext4 (magic %#x): the flag is ext4's", root, sfs.Type)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd, err := unix.Open(s.tmp(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	if flags&0x00020000 == 0 {
		t.Errorf("%s flags %#x: no FS_TOPDIR_FL", s.tmp(), flags)
	}
	// Opening the store again leaves the flag as it is.
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}
