package planner

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

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
// cache mount instance: its contents, and its owner, mode and times, as
// BuildKit shows the source directory itself (a uid/gid/mode given with a
// source= are not used, as in BuildKit). Owners are kept as COPY --from
// keeps them.
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
	// Copied to a new /seed with TopMeta, the source directory (a
	// symlink naming it followed in the stage, as for any source) keeps
	// its own owner, mode and times.
	op := copier.Op{Kind: "copy", Sources: []string{src}, Dest: "/seed", FromStage: true, TopMeta: true}
	spec := executor.CopySpec{
		Rootfs: executor.Rootfs{Upper: filepath.Join(work, "upper"), Work: filepath.Join(work, "work")},
		Source: executor.Rootfs{Lowers: lowers(layers)},
		Op:     op,
	}
	for _, d := range []string{spec.Rootfs.Upper, spec.Rootfs.Work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("seeding cache mount: %w", err)
		}
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
	return adoptDir(filepath.Join(spec.Rootfs.Upper, "seed"), dir, src)
}

// adoptDir moves what seed holds into dir and gives dir seed's owner,
// mode and times. Both are kiln's own directories on one filesystem;
// entries are renamed by name, never followed.
func adoptDir(seed, dir, src string) error {
	fi, err := os.Lstat(seed)
	if err != nil {
		return fmt.Errorf("seeding the cache mount from %s: %w", src, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return fmt.Errorf("seeding the cache mount from %s: it is not a directory; point source= at a directory of the stage", src)
	}
	ents, err := os.ReadDir(seed)
	if err != nil {
		return fmt.Errorf("seeding cache mount: %w", err)
	}
	for _, e := range ents {
		if err := os.Rename(filepath.Join(seed, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("seeding cache mount: %w", err)
		}
	}
	if err := os.Lchown(dir, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("seeding cache mount: %w", err)
	}
	if err := os.Chmod(dir, fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return fmt.Errorf("seeding cache mount: %w", err)
	}
	mtime := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	if err := os.Chtimes(dir, time.Unix(st.Atim.Sec, st.Atim.Nsec), mtime); err != nil {
		return fmt.Errorf("seeding cache mount: %w", err)
	}
	return nil
}
