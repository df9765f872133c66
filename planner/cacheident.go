package planner

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/progress"
)

// cacheMountIdentity is which cache a RUN --mount=type=cache uses, as
// BuildKit keys it: its id (the target when none is given) and, when
// they are set, the base its directory is made on — a from= stage or
// image (with the source path shown), or the uid/gid/mode its directory is
// created with (BuildKit mkdirs "/cache" on that base then). Two mounts of
// one id that differ in any of those are different caches. A mount with
// none of them keeps the bare id, so existing caches (and the cache mounts
// of a --cache-from) keep their names. The parts are appended in brackets,
// readable in messages ("/c [uid=1000 gid=0 mode=0755]"); an id written to
// look like another's identity only shares a cache its own Dockerfile could
// already name.
//
// fill, for from=, copies the source path of the stage or image into a new
// instance (BuildKit seeds the cache from that state); it is nil otherwise.
//
// One difference remains, on purpose: BuildKit makes one cache of the whole
// from= state and shows source= as a subdirectory of it, so mounts of one
// id and stage with different sources share it (checked with buildkitd
// v0.34.2). Here each source is a cache of its own, seeded with that path
// only: no copy of a whole base image per cache, and no bind mount of a
// path inside a cache that a concurrent step could turn into a symlink.
func (b *build) cacheMountIdentity(ctx context.Context, s *stage, m *instructions.Mount, id string) (ident string, init cache.CacheMountInit, fill func(ctx context.Context, dir string, log progress.Step) error, err error) {
	ident = id
	init = cacheMountInit(m)
	src := path.Clean("/" + m.Source)
	perms := m.UID != nil || m.GID != nil || m.Mode != nil
	if m.From != "" {
		layers, key, err := b.mountSource(ctx, s, m.From)
		if err != nil {
			return "", init, nil, err
		}
		ident += " [from=" + key
		if src != "/" {
			ident += fmt.Sprintf(" source=%q", src)
		}
		ident += "]"
		if src != "/" || !perms {
			// With uid/gid/mode and no source, BuildKit shows a new
			// directory made on the stage: nothing of it is seen.
			fill = func(ctx context.Context, dir string, log progress.Step) error {
				return b.fillCacheMount(ctx, dir, layers, src, log)
			}
		}
	}
	if perms && src == "/" {
		ident += fmt.Sprintf(" [uid=%d gid=%d mode=%#o]", init.UID, init.GID, init.Mode)
	}
	return ident, init, fill, nil
}

// fillCacheMount copies src of the stage or image layers into dir, a new
// cache mount instance, keeping owners and modes as COPY --from does.
func (b *build) fillCacheMount(ctx context.Context, dir string, layers []cache.LayerInfo, src string, log progress.Step) error {
	layers, err := b.materialize(ctx, layers, log)
	if err != nil {
		return err
	}
	work, err := b.opt.Store.TempDir("cache-mount-from-")
	if err != nil {
		return fmt.Errorf("seeding cache mount: %w", err)
	}
	defer os.RemoveAll(work)
	spec := executor.CopySpec{
		Rootfs: executor.Rootfs{Upper: dir, Work: filepath.Join(work, "work")},
		Source: executor.Rootfs{Lowers: lowers(layers)},
		Op:     copier.Op{Kind: "copy", Sources: []string{src}, Dest: "/", FromStage: true},
	}
	if err := os.Mkdir(spec.Rootfs.Work, 0o755); err != nil {
		return fmt.Errorf("seeding cache mount: %w", err)
	}
	if len(layers) == 0 {
		empty := filepath.Join(work, "empty")
		if err := os.Mkdir(empty, 0o755); err != nil {
			return fmt.Errorf("seeding cache mount: %w", err)
		}
		spec.SourceDir = empty
	}
	if err := executor.Copy(ctx, spec); err != nil {
		return fmt.Errorf("seeding the cache mount from %s: %w", src, err)
	}
	return nil
}
