package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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

// CacheMountInit is the owner and mode an instance is created with, and
// what fills it.
type CacheMountInit struct {
	Mode     os.FileMode
	UID, GID int
	// Seed, when set, are layers whose application in order gives a new
	// instance its first contents: a cache mount imported with
	// --cache-from. They are fetched only then, verified like any pulled
	// layer, through Wrap when set (progress).
	Seed []LayerInfo
	Wrap func(v1.Layer) v1.Layer
	// SeedFailed is told why Seed could not be applied; the instance is
	// then created empty, as if there were no seed: a cache can make a
	// step faster, never fail it.
	SeedFailed func(error)
	// Fill, when set, gives a new instance without Seed its first
	// contents (RUN --mount=type=cache,from=…): it writes into dir, the
	// instance being made.
	Fill func(ctx context.Context, dir string) error
}

// cacheMountBase is the path of id's first instance.
func (s *Store) cacheMountBase(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(s.cacheMountsDir(), hex.EncodeToString(sum[:16]))
}

func (s *Store) cacheMountsDir() string { return filepath.Join(s.Root, "cachemounts") }

// makeCacheMountsDir makes ROOT/cachemounts, whose instances are spread
// over the filesystem like the store's scratch (spreadSubdirs): a cache
// mount restored on a fresh runner is thousands of new files.
func (s *Store) makeCacheMountsDir() error {
	dir := s.cacheMountsDir()
	if _, err := os.Lstat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	spreadSubdirs(dir)
	return nil
}

// CacheMount finds (or creates) an instance of the cache mount id for a
// step, per sharing, and marks it used now. The step may use dir until it
// calls release.
func (s *Store) CacheMount(ctx context.Context, id string, sharing CacheSharing, init CacheMountInit) (dir string, release func(), err error) {
	base := s.cacheMountBase(id)
	if err := s.makeCacheMountsDir(); err != nil {
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
		if err := s.ensureCacheMount(ctx, inst, init); err != nil {
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
	if err := s.ensureCacheMount(ctx, base, init); err != nil {
		l.release()
		return "", nil, fmt.Errorf("creating cache mount %s: %w", id, err)
	}
	l.touch()
	return base, l.release, nil
}

// PrepareCacheMount makes the first instance of cache mount id ahead of
// the step that will use it, so that restoring init.Seed (a mount
// imported with --cache-from: a download and an unpack) overlaps the
// steps before it. It does what that step's CacheMount would do to the
// instance, under the same lock, and releases it: nothing when the
// instance exists already, or when another build holds it (that step
// then makes or waits for its own, as it always has). A seed that cannot
// be applied is told to init.SeedFailed and leaves an empty instance, as
// it would at the step.
func (s *Store) PrepareCacheMount(ctx context.Context, id string, sharing CacheSharing, init CacheMountInit) error {
	base := s.cacheMountBase(id)
	if _, err := os.Lstat(base); err == nil {
		return nil
	}
	if err := s.makeCacheMountsDir(); err != nil {
		return fmt.Errorf("opening cache mount %s: %w", id, err)
	}
	l, ok, err := tryLockFile(base+".lock", sharing != CacheShared)
	if err != nil {
		return fmt.Errorf("opening cache mount %s: %w", id, err)
	}
	if !ok {
		return nil
	}
	defer l.release()
	if err := s.ensureCacheMount(ctx, base, init); err != nil {
		return fmt.Errorf("creating cache mount %s: %w", id, err)
	}
	return nil
}

// ensureCacheMount creates the instance dir, whole, if it does not exist:
// built (and seeded) under a temp name and renamed, so that it never
// appears with the wrong owner or mode, or half filled. The caller holds
// its lock; a shared lock lets another process create it at the same
// time, and then the first rename wins.
func (s *Store) ensureCacheMount(ctx context.Context, dir string, init CacheMountInit) error {
	if _, err := os.Lstat(dir); err == nil {
		return nil
	}
	mu, _ := mountInit.LoadOrStore(dir, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
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
	var state *mountState
	if err == nil && len(init.Seed) == 0 && init.Fill != nil {
		err = init.Fill(ctx, tmp)
	}
	if err == nil && len(init.Seed) > 0 {
		var serr error
		if state, serr = s.seedCacheMount(ctx, tmp, init.Seed, init.Wrap); serr != nil {
			state = nil
			if cerr := ctx.Err(); cerr != nil {
				// a cancelled build, not a bad seed: leave no empty
				// instance that the next build would take as warm
				os.RemoveAll(tmp)
				return cerr
			}
			if init.SeedFailed != nil {
				init.SeedFailed(serr)
			}
			// start again from an empty directory
			if err = os.RemoveAll(tmp); err == nil {
				if err = os.Mkdir(tmp, 0o700); err == nil {
					if err = os.Chmod(tmp, mode); err == nil {
						err = os.Chown(tmp, init.UID, init.GID)
					}
				}
			}
		}
	}
	if err == nil {
		err = renameNoReplace(tmp, dir)
		if errors.Is(err, os.ErrExist) {
			os.RemoveAll(tmp) // another process made it first
			return nil
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	// A new instance starts a new state: none, or the seed's.
	if err := writeMountState(dir, state); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

// MountSnapshot is the contents of a cache mount as layers.
type MountSnapshot struct {
	// Layers applied in order give the contents; the last is the newest.
	Layers []LayerInfo
	// Created is when the last layer was made.
	Created time.Time
	// Added is the layer this snapshot committed, if any (zero when the
	// instance had not changed since its state).
	Added LayerInfo
}

// MountSnapshotOptions tune SnapshotCacheMount.
type MountSnapshotOptions struct {
	// MaxLayers: a list that would grow past it is replaced by one layer
	// of the whole contents. 0 means 8.
	MaxLayers int
	// Full makes one layer of the whole contents whatever the state (the
	// layers of the state are not all available any more).
	Full bool
	// Wait bounds the wait for steps of other builds using the instance.
	Wait time.Duration
}

// HasBlob reports whether the store holds the blob d.
func (s *Store) HasBlob(d v1.Hash) bool {
	if checkHash(d) != nil {
		return false
	}
	_, err := os.Lstat(s.blobPath(d))
	return err == nil
}

// mountInit holds a mutex per instance path: one creator at a time in a
// process (two steps sharing a new cache mount fetch its seed once).
var mountInit sync.Map
