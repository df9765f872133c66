package export

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive flock on path, creating it, and returns the
// function that removes and releases it. Removing the file is what lets a
// layout stay free of a stray lock file; it is safe because a waiter checks
// after locking that it holds the file still at path, and retries if not.
func lockFile(path string) (func(), error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("flock: %w", err)
		}
		var held, current unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, err
		}
		if err := unix.Stat(path, &current); err != nil || held.Ino != current.Ino || held.Dev != current.Dev {
			// The previous holder removed the file while we waited.
			f.Close()
			continue
		}
		return func() {
			os.Remove(path)
			f.Close()
		}, nil
	}
}
