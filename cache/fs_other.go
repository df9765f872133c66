//go:build !linux

package cache

import (
	"context"
	"os"
)

// syncFilesystem is a no-op off Linux, where kiln cannot build anyway.
func syncFilesystem(string) error { return nil }

// sameFilesystem lets rename be the judge off Linux.
func sameFilesystem(string, string) (bool, error) { return true, nil }

// spreadSubdirs is a Linux (ext4) hint.
func spreadSubdirs(string) {}

// lockStore does not clean up off Linux: without flock there is no safe
// way to tell a dead process's leftovers from a live one's.
func lockStore(string, func()) (*storeLock, error) { return &storeLock{}, nil }

// storeLock holds nothing off Linux.
type storeLock struct{}

// Close does nothing.
func (*storeLock) Close() error { return nil }

// fileLock is a no-op off Linux, where kiln runs no step.
type fileLock struct{}

func tryLockFile(string, bool) (*fileLock, bool, error) { return &fileLock{}, true, nil }

func waitLockFile(context.Context, string) (*fileLock, error) { return &fileLock{}, nil }

func (*fileLock) touch()   {}
func (*fileLock) release() {}

// statOwner reports nothing off Linux, where no layer is unpacked.
func statOwner(os.FileInfo) (uid, gid uint32, rdev uint64) { return 0, 0, 0 }
