package planner

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sync/errgroup"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/progress"
)

// runMounts is what the RUN --mount flags of one step need: mounts and
// files for the sandbox, environment variables for secrets, and the cache
// mounts to find an instance of.
type runMounts struct {
	mounts []executor.Mount
	files  []executor.File
	env    []string
	// layered are mounts of stages or of the context that need throwaway
	// overlay dirs in the step directory, made by prepare.
	layered []int
	// caches are cache mounts, whose directory prepare picks: which
	// instance a step gets depends on who else uses the cache then.
	caches []cacheMount
	store  *cache.Store
	// snapshots are the bind mounts from the build context, by index in
	// mounts: prepare copies the selection .dockerignore keeps (checked
	// against the key) into the step directory and mounts that instead.
	snapshots map[int]contextSnapshot
	// lazy are the layers of stage and image mounts, by index in mounts,
	// that are not in the store yet: unpacked only if the step runs.
	lazy map[int][]cache.LayerInfo
	// fetchLayers materializes lazy layers, with progress on the step.
	fetchLayers func(context.Context, []cache.LayerInfo, progress.Step) ([]cache.LayerInfo, error)
	// awaitAhead waits for a cache mount restored ahead (seeds.go).
	awaitAhead func(context.Context, string, progress.Step) error
	// ssh are the ssh mounts whose agent the build has (sshmounts.go);
	// nSSH counts all of them, sshErr is a required one it lacks.
	ssh    []sshMount
	nSSH   int
	sshErr error
}

// fetch gets what the mounts of a step that runs need from the store or
// a cache source, side by side: the lazy layers of mount sources and the
// cache mount instances (seeding a new one from --cache-from). The
// returned release gives the cache mounts back once the step is over.
func (rm *runMounts) fetch(ctx context.Context, log progress.Step) (release func(), err error) {
	var mu sync.Mutex
	var held []func()
	release = func() {
		for _, r := range held {
			r()
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, layers := range rm.lazy {
		g.Go(func() error {
			ls, err := rm.fetchLayers(gctx, layers, log)
			if err != nil {
				return err
			}
			mu.Lock()
			rm.mounts[i].Lowers = lowers(ls)
			mu.Unlock()
			return nil
		})
	}
	for _, c := range rm.caches {
		if c.fill != nil {
			fill := c.fill
			c.init.Fill = func(ctx context.Context, dir string) error { return fill(ctx, dir, log) }
		}
		if len(c.init.Seed) > 0 {
			id := c.id
			c.init.Wrap = func(l v1.Layer) v1.Layer { return progress.WatchLayer(log, l) }
			c.init.SeedFailed = func(err error) { warnSeed(log, id, err) }
		}
		g.Go(func() error {
			if rm.awaitAhead != nil {
				// restored while the steps before ran: the instance
				// is there, or its restoring failed and left none
				if err := rm.awaitAhead(gctx, c.id, log); err != nil {
					return err
				}
			}
			dir, r, err := rm.store.CacheMount(gctx, c.id, c.sharing, c.init)
			if err != nil {
				return err
			}
			mu.Lock()
			held = append(held, r)
			rm.mounts[c.index].Source = dir
			mu.Unlock()
			return nil
		})
	}
	err = g.Wait()
	return release, err
}

// cacheMount is a RUN --mount=type=cache waiting for its directory.
type cacheMount struct {
	index   int // in runMounts.mounts
	id      string
	sharing cache.CacheSharing
	init    cache.CacheMountInit
	// fill seeds a new instance from a stage or image (from=).
	fill func(ctx context.Context, dir string, log progress.Step) error
}

// contextSnapshot is what a bind mount of the context shows: the COPY
// of its source, as BuildKit shows the transferred context only.
type contextSnapshot struct {
	dir string // the context
	sum string // the checksum of what it shows
	op  copier.Op
}

// sharedSnapshot is one snapshot of the context, made once per build and
// shown, read-only as an overlay lower, by every RUN step that binds the
// same source with the same checksum.
type sharedSnapshot struct {
	once sync.Once
	dir  string // the store scratch dir holding it
	err  error
}

// contextSnapshot returns the directory holding snap's selection, copying
// it on first use.
func (b *build) contextSnapshot(ctx context.Context, snap contextSnapshot) (string, error) {
	key := snap.op.Sources[0] + "\x00" + snap.sum
	b.snapMu.Lock()
	if b.snaps == nil {
		b.snaps = map[string]*sharedSnapshot{}
	}
	sh := b.snaps[key]
	if sh == nil {
		sh = &sharedSnapshot{}
		b.snaps[key] = sh
	}
	b.snapMu.Unlock()
	sh.once.Do(func() {
		if sh.dir, sh.err = b.opt.Store.TempDir("context-mount-"); sh.err != nil {
			return
		}
		rf := executor.Rootfs{Upper: filepath.Join(sh.dir, "fs"), Work: filepath.Join(sh.dir, "work")}
		for _, d := range []string{rf.Upper, rf.Work} {
			if sh.err = os.Mkdir(d, 0o755); sh.err != nil {
				return
			}
		}
		if err := executor.Copy(ctx, executor.CopySpec{Rootfs: rf, SourceDir: snap.dir, Op: snap.op}); err != nil {
			sh.err = fmt.Errorf("RUN --mount=type=bind from the build context: %w", err)
		}
	})
	if sh.err != nil {
		return "", sh.err
	}
	return filepath.Join(sh.dir, "fs"), nil
}

// removeSnapshots removes the build's context mount snapshots.
func (b *build) removeSnapshots() {
	b.snapMu.Lock()
	defer b.snapMu.Unlock()
	for _, sh := range b.snaps {
		if sh.dir != "" {
			os.RemoveAll(sh.dir)
		}
	}
}

// resolveMounts turns a RUN's --mount flags into sandbox mounts and adds
// what identifies them to the step key: a cache mount by its id (its
// contents are a cache, not an input), a bind by the content of what it
// shows, a secret by its id only (secrets never reach keys or layers).
func (b *build) resolveMounts(ctx context.Context, s *stage, c *instructions.RunCommand, k *stepKey) (*runMounts, error) {
	rm := &runMounts{}
	for i, m := range instructions.GetMounts(c) {
		target := m.Target
		if target != "" && !path.IsAbs(target) {
			target = path.Join(s.workdir, target)
		}
		name := fmt.Sprintf("mount %d", i)
		switch m.Type {
		case instructions.MountTypeCache:
			id := m.CacheID
			if id == "" {
				id = target
			}
			id, init, fill, err := b.cacheMountIdentity(ctx, s, m, id)
			if err != nil {
				return nil, err
			}
			cm := cacheMount{index: len(rm.mounts), id: id, sharing: cacheSharing(m), init: init, fill: fill}
			if src, ok := b.opt.Remote.(CacheMountSource); ok {
				// fetched only if the step runs and finds no instance
				cm.init.Seed, _ = src.CacheMountLayers(id)
			}
			rm.caches = append(rm.caches, cm)
			rm.store = b.opt.Store
			rm.awaitAhead = b.awaitAhead
			rm.mounts = append(rm.mounts, executor.Mount{Type: "bind", Target: target, Readonly: m.ReadOnly})
			k.add(name, fmt.Sprintf("cache id=%s target=%s ro=%v", id, target, m.ReadOnly))
		case instructions.MountTypeTmpfs:
			if m.SizeLimit < 0 {
				return nil, fmt.Errorf("RUN --mount=type=tmpfs,size=%d: the size must be positive", m.SizeLimit)
			}
			rm.mounts = append(rm.mounts, executor.Mount{Type: "tmpfs", Target: target, Size: m.SizeLimit})
			desc := "tmpfs target=" + target
			if m.SizeLimit > 0 {
				// a step that fills its tmpfs may behave differently
				desc += fmt.Sprintf(" size=%d", m.SizeLimit)
			}
			k.add(name, desc)
		case instructions.MountTypeBind:
			src := path.Clean("/" + m.Source)
			mt := executor.Mount{Type: "layers", Target: target, Readonly: m.ReadOnly, SubPath: src}
			cs, err := b.mountContext(ctx, m.From)
			if err != nil {
				return nil, fmt.Errorf("RUN --mount=type=bind: %w", err)
			}
			if cs != nil {
				abs := cs.dir
				sum, entries, err := cs.hasher.Checksum([]string{src}, cs.excludes)
				if err != nil {
					return nil, fmt.Errorf("RUN --mount=type=bind,source=%s: %w", m.Source, err)
				}
				k.add(name, fmt.Sprintf("bind context %s target=%s ro=%v %s", src, target, m.ReadOnly, sum))
				// The mount shows a snapshot of exactly what the key
				// hashed — what .dockerignore keeps, verified entry by
				// entry while copied — as a lower dir: writes to a rw bind
				// go to a throwaway upper, never to the user's files.
				// Owned by root, as BuildKit's client sends every local
				// directory (uid and gid reset to 0), not by the host owner.
				op := copier.Op{Kind: "copy", Sources: []string{src}, Dest: src, Excludes: cs.excludes, Verify: true}
				for _, e := range entries {
					op.Expect = append(op.Expect, copier.Entry{Path: e.Path, Sum: e.Sum})
				}
				if rm.snapshots == nil {
					rm.snapshots = map[int]contextSnapshot{}
				}
				rm.snapshots[len(rm.mounts)] = contextSnapshot{dir: abs, sum: sum, op: op}
			} else {
				layers, key, err := b.mountSource(ctx, s, m.From)
				if err != nil {
					return nil, err
				}
				mt.Lowers = lowers(layers)
				if anyLazy(layers) {
					if rm.lazy == nil {
						rm.lazy = map[int][]cache.LayerInfo{}
					}
					rm.lazy[len(rm.mounts)] = layers
				}
				k.add(name, fmt.Sprintf("bind from %s %s target=%s ro=%v", key, src, target, m.ReadOnly))
			}
			rm.layered = append(rm.layered, len(rm.mounts))
			rm.mounts = append(rm.mounts, mt)
		case instructions.MountTypeSecret:
			id := m.CacheID
			if id == "" {
				id = path.Base(target)
			}
			data, ok := b.opt.Secrets[id]
			if !ok {
				if m.Required {
					return nil, fmt.Errorf("RUN --mount=type=secret,id=%s: the secret is required; pass it with --secret id=%s,src=FILE", id, id)
				}
				continue
			}
			if m.Env != nil {
				env := *m.Env
				if env == "" {
					env = id
				}
				rm.env = append(rm.env, env+"="+string(data))
				if target == "" {
					k.add(name, "secret env "+env)
					continue
				}
			}
			if target == "" {
				target = "/run/secrets/" + id
			}
			mode := os.FileMode(0o400)
			if m.Mode != nil {
				mode = os.FileMode(*m.Mode)
			}
			rm.files = append(rm.files, executor.File{Path: target, Data: data, Mode: mode})
			k.add(name, "secret "+id+" target="+target)
		case instructions.MountTypeSSH:
			if err := b.resolveSSH(s, m, name, rm, k); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("RUN --mount=type=%s is not supported by kiln yet; remove the mount or build this Dockerfile with BuildKit", m.Type)
		}
	}
	return rm, nil
}

// mountSource finds the layers of a stage or image named in from=.
func (b *build) mountSource(ctx context.Context, s *stage, from string) ([]cache.LayerInfo, string, error) {
	if dep := b.stageRef(from); dep != nil {
		if dep.index >= s.index {
			return nil, "", fmt.Errorf("RUN --mount from=%s: stage %q must be defined before stage %q", from, from, s.label())
		}
		if err := b.waitFor(ctx, dep); err != nil {
			return nil, "", err
		}
		return dep.layers, dep.key, nil
	}
	layers, canonical, err := b.imageLayers(ctx, from, s.platform)
	if err != nil {
		return nil, "", fmt.Errorf("RUN --mount from=%s: no stage is named %q and it is no usable image%s: %w", from, from, suggestStage(from, b.stageNames()), err)
	}
	return layers, canonical, nil
}

// cacheSharing is how steps running at once share m's instances.
func cacheSharing(m *instructions.Mount) cache.CacheSharing {
	switch m.CacheSharing {
	case instructions.MountSharingPrivate:
		return cache.CachePrivate
	case instructions.MountSharingLocked:
		return cache.CacheLocked
	default:
		return cache.CacheShared
	}
}

// cacheMountInit is the mode and owner a cache mount's directory is
// created with the first time it is used.
func cacheMountInit(m *instructions.Mount) cache.CacheMountInit {
	init := cache.CacheMountInit{Mode: 0o755}
	if m.Mode != nil {
		init.Mode = os.FileMode(*m.Mode)
	}
	if m.UID != nil {
		init.UID = int(*m.UID)
	}
	if m.GID != nil {
		init.GID = int(*m.GID)
	}
	return init
}

// CacheMountSource is what RemoteRecords that carry cache mounts also are
// (--cache-from of a cache exported with mounts=true).
type CacheMountSource interface {
	// CacheMountLayers returns the imported contents of cache mount id
	// as lazy layers, to apply in order.
	CacheMountLayers(id string) ([]cache.LayerInfo, bool)
}

// cacheIDs are the ids of the step's cache mounts.
func (rm *runMounts) cacheIDs() []string {
	var out []string
	for _, c := range rm.caches {
		out = append(out, c.id)
	}
	return out
}

// prepare makes the throwaway overlay dirs of layered mounts inside the
// step directory and gets the snapshots of context mounts from snapshot
// (cache mounts were picked by fetch), and starts the ssh agent sockets.
// The returned function is for the caller to defer.
func (rm *runMounts) prepare(ctx context.Context, stepDir string, snapshot func(context.Context, contextSnapshot) (string, error), log progress.Step) (func(), error) {
	stopSSH, err := rm.startSSH(stepDir)
	if err != nil {
		return stopSSH, err
	}
	for n, i := range rm.layered {
		base := filepath.Join(stepDir, fmt.Sprintf("mount-%d", n))
		for _, d := range []string{"upper", "work", "stage"} {
			if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
				return stopSSH, err
			}
		}
		m := &rm.mounts[i]
		if snap, ok := rm.snapshots[i]; ok {
			dir, err := snapshot(ctx, snap)
			if err != nil {
				return stopSSH, err
			}
			m.Lowers = []string{dir}
		}
		m.Upper, m.Work, m.Stage = filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "stage")
		if len(m.Lowers) == 0 {
			// a stage without layers: an empty tree
			empty := filepath.Join(base, "empty")
			if err := os.Mkdir(empty, 0o755); err != nil {
				return stopSSH, err
			}
			m.Lowers = []string{empty}
		}
	}
	return stopSSH, nil
}
