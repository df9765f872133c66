package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Cache mounts (RUN --mount=type=cache) live beside the layers:
//
//	ROOT/cachemounts/<32 hex of sha256(id)>[-N]        an instance: a directory
//	ROOT/cachemounts/<32 hex of sha256(id)>[-N].lock   flocked while a step uses it
//
// An id has one instance until steps need more at once: a private mount
// whose instances are all in use gets a new one, as in BuildKit. The lock
// file's mtime is the instance's last use, which prune goes by.

// CacheSharing is how RUN steps that run at the same time share a cache
// mount, BuildKit's three modes.
type CacheSharing int

const (
	// CacheShared lets any number of steps use one instance at once.
	CacheShared CacheSharing = iota
	// CachePrivate gives the step an instance no other step is using,
	// a new (empty) one when every instance is busy.
	CachePrivate
	// CacheLocked makes the step wait until it can use an instance alone.
	CacheLocked
)

// CacheMountInit is the owner and mode an instance is created with.
type CacheMountInit struct {
	Mode     os.FileMode
	UID, GID int
}

func (s *Store) cacheMountsDir() string { return filepath.Join(s.Root, "cachemounts") }

// CacheMount finds (or creates) an instance of the cache mount id for a
// step, per sharing, and marks it used now. The step may use dir until it
// calls release.
func (s *Store) CacheMount(ctx context.Context, id string, sharing CacheSharing, init CacheMountInit) (dir string, release func(), err error) {
	sum := sha256.Sum256([]byte(id))
	base := filepath.Join(s.cacheMountsDir(), hex.EncodeToString(sum[:16]))
	if err := os.MkdirAll(s.cacheMountsDir(), 0o755); err != nil {
		return "", nil, fmt.Errorf("opening cache mount %s: %w", id, err)
	}
	exclusive := sharing != CacheShared
	for n := 0; ; n++ {
		inst := base
		if n > 0 {
			inst = base + "-" + strconv.Itoa(n)
		}
		if sharing == CacheLocked && n > 0 {
			// locked never makes a new instance: it waits for one
			if _, err := os.Lstat(inst); err != nil {
				break
			}
		}
		l, ok, err := tryLockFile(inst+".lock", exclusive)
		if err != nil {
			return "", nil, fmt.Errorf("opening cache mount %s: %w", id, err)
		}
		if !ok {
			continue
		}
		if err := s.ensureCacheMount(inst, init); err != nil {
			l.release()
			return "", nil, fmt.Errorf("creating cache mount %s: %w", id, err)
		}
		l.touch()
		return inst, l.release, nil
	}
	// Every instance is busy and the step must wait: the first instance
	// is the one a locked mount goes back to.
	l, err := waitLockFile(ctx, base+".lock")
	if err != nil {
		return "", nil, fmt.Errorf("waiting for cache mount %s: %w", id, err)
	}
	if err := s.ensureCacheMount(base, init); err != nil {
		l.release()
		return "", nil, fmt.Errorf("creating cache mount %s: %w", id, err)
	}
	l.touch()
	return base, l.release, nil
}

// ensureCacheMount creates the instance dir, whole, if it does not exist:
// built under a temp name and renamed, so that it never appears with the
// wrong owner or mode. The caller holds its lock, so no one else creates it
// at the same time.
func (s *Store) ensureCacheMount(dir string, init CacheMountInit) error {
	if _, err := os.Lstat(dir); err == nil {
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".new-")
	if err != nil {
		return err
	}
	mode := init.Mode
	if mode == 0 {
		mode = 0o755
	}
	err = os.Chmod(tmp, mode)
	if err == nil {
		err = os.Chown(tmp, init.UID, init.GID)
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(dir))
}
