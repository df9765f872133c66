//go:build !linux

package cache

import "io"

// syncFilesystem is a no-op off Linux, where kiln cannot build anyway.
func syncFilesystem(string) error { return nil }

// sameFilesystem lets rename be the judge off Linux.
func sameFilesystem(string, string) (bool, error) { return true, nil }

// lockStore does not clean up off Linux: without flock there is no safe
// way to tell a dead process's leftovers from a live one's.
func lockStore(string, func()) (io.Closer, error) { return nopCloser{}, nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
