package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// lockExclusive turns the store's shared lock on ROOT/lock into an
// exclusive one: then no other kiln process has the store open. Linux
// converts a flock by dropping the old lock first, so a failed attempt
// leaves none; unlock (and every failure) takes the shared lock back.
func (s *Store) lockExclusive(ctx context.Context, wait func()) (unlock func(), err error) {
	s.lock.mu.Lock()
	fd := s.lock.fd
	s.lock.mu.Unlock()
	if fd < 0 {
		return nil, errors.New("the store is closed")
	}
	relock := func() { flockRetry(fd, unix.LOCK_SH) }
	waited := false
	// Polling rather than a blocking flock, so that ctx can stop the wait.
	for tick := time.Duration(0); ; {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return relock, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			relock()
			return nil, fmt.Errorf("locking %s: %w", s.lock.name, err)
		}
		if err == unix.EINTR {
			continue
		}
		if wait == nil {
			relock()
			return nil, ErrStoreBusy
		}
		if !waited {
			waited = true
			wait()
		}
		if tick < 500*time.Millisecond {
			tick += 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			relock()
			return nil, ctx.Err()
		case <-time.After(tick):
		}
	}
}
