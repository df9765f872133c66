package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// ErrStoreBusy is returned by Prune when other kiln processes have the
// store open and PruneOptions.Wait is nil.
var ErrStoreBusy = errors.New("the store is in use by another kiln process")

// PruneOptions selects what Prune removes. Named images, and every layer
// and blob they use, are never removed, nor are the layers under a state
// kept for kiln debug (until kiln debug --rm). Debris is always removed:
// scratch left by killed builds, step records whose layer is gone, blobs
// nothing uses, half-made cache mounts.
type PruneOptions struct {
	// All removes every step record, every layer no named image uses and
	// every cache mount. Without it, a layer stays while a step record
	// that counts as recent (see Until) uses it.
	All bool
	// Until, when positive, limits removal to entries unused for that
	// long: step records not hit, layers neither stored nor reached through
	// a step hit within Until, cache mounts no step used within Until.
	// Without All, a layer no step record uses is removed once it is that
	// old.
	Until time.Duration
	// KeepStorage, when positive, stops removing once what prune could
	// remove (the build cache: layers no image or kept debug state uses,
	// their blobs, step records, cache mounts, debris) takes at most that
	// many bytes, least recently used first; images, kept debug states
	// and logs do not count. Without All or Until, every such entry is
	// then a candidate.
	KeepStorage int64
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Wait, when not nil, makes Prune wait for the other kiln processes
	// using the store to finish; it is called once, before waiting. When
	// nil, Prune returns ErrStoreBusy at once.
	Wait func()
}

// PruneReport says what Prune removed (or would remove, for a dry run).
type PruneReport struct {
	Steps, Layers, Blobs, CacheMounts int
	// TmpEntries are leftovers of killed builds.
	TmpEntries int
	// DebugStates are the builds whose failed steps are kept for kiln
	// debug: they, and the layers under them, stay.
	DebugStates int
	// Reclaimed is the disk space freed, in bytes.
	Reclaimed int64
	// Remaining is the disk space the store occupies afterwards.
	Remaining int64
	// RemainingCache is the part of Remaining that a prune could remove:
	// what KeepStorage bounds.
	RemainingCache int64
}

// Prune removes least recently used entries. It takes the store's lock
// exclusively for its whole run, so no build is using any entry while it
// decides and removes: it waits for running builds (or refuses, see
// PruneOptions.Wait), and builds that start meanwhile wait for it in Open.
// The lock excludes other processes only: this process must not build with
// the same root while it prunes (prune empties ROOT/tmp).
func (s *Store) Prune(ctx context.Context, opts PruneOptions) (PruneReport, error) {
	unlock, err := s.lockExclusive(ctx, opts.Wait)
	if err != nil {
		return PruneReport{}, fmt.Errorf("pruning %s: %w", s.Root, err)
	}
	defer unlock()
	inv, err := s.inventory()
	if err != nil {
		return PruneReport{}, fmt.Errorf("pruning %s: %w", s.Root, err)
	}
	p := inv.plan(opts, time.Now())
	rep := p.report(inv)
	if opts.DryRun {
		return rep, nil
	}
	if err := s.apply(ctx, inv, p); err != nil {
		return rep, fmt.Errorf("pruning %s: %w", s.Root, err)
	}
	return rep, nil
}

// prunePlan is the set of entries to remove.
type prunePlan struct {
	steps  map[*stepEntry]bool
	layers map[*layerEntry]bool
	blobs  map[string]bool
	mounts map[*cacheMountEntry]bool
	tmp    bool
}

func (inv *inventory) plan(opts PruneOptions, now time.Time) *prunePlan {
	p := &prunePlan{steps: map[*stepEntry]bool{}, layers: map[*layerEntry]bool{}, blobs: map[string]bool{}, mounts: map[*cacheMountEntry]bool{}, tmp: true}
	old := func(t time.Time) bool { return opts.Until > 0 && t.Before(now.Add(-opts.Until)) }
	anyAge := opts.Until <= 0

	// Debris first: it is always removed and frees space before any LRU
	// decision is made.
	for _, st := range inv.steps {
		if !st.valid || st.missing {
			p.steps[st] = true
		}
	}

	// Step records: all with All, the old ones with Until.
	for _, st := range inv.steps {
		if opts.All && anyAge || old(st.used) {
			if st.layer == nil || inv.pinnedLayers[st.layer.info.DiffID.Hex] || opts.KeepStorage <= 0 {
				p.steps[st] = true
			}
		}
	}

	// Layers no image uses and cache mounts, oldest use first.
	var cands []lruEntry
	for hex, l := range inv.layers {
		if inv.pinnedLayers[hex] {
			continue
		}
		var cand bool
		switch {
		case opts.All:
			cand = anyAge || old(l.lastUsed())
		case opts.Until > 0:
			cand = old(l.lastUsed())
		case opts.KeepStorage > 0:
			cand = true
		default:
			cand = len(l.refs) == 0
		}
		if cand {
			cands = append(cands, lruEntry{used: l.lastUsed(), name: l.dir, layer: l})
		}
	}
	for _, m := range inv.mounts {
		// Without a flag, prune keeps cache mounts: they are what makes
		// a package install fast, and nothing else brings them back.
		cand := opts.All && anyAge || old(m.used) || opts.KeepStorage > 0 && opts.Until <= 0
		if cand {
			cands = append(cands, lruEntry{used: m.used, name: m.dir, mount: m})
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if !cands[i].used.Equal(cands[j].used) {
			return cands[i].used.Before(cands[j].used)
		}
		return cands[i].name < cands[j].name
	})
	// What KeepStorage bounds is what prune could remove, not the whole
	// store: the candidates with what goes with them, and debris.
	cacheSize := p.debrisSize(inv) + inv.stepsSize(p, cands)
	for _, c := range cands {
		cacheSize += inv.entrySize(c)
	}
	freed := p.debrisSize(inv)
	for _, c := range cands {
		if opts.KeepStorage > 0 && cacheSize-freed <= opts.KeepStorage {
			break
		}
		if m := c.mount; m != nil {
			p.mounts[m] = true
			freed += m.size
			continue
		}
		l := c.layer
		p.layers[l] = true
		freed += l.size
		if !inv.pinnedBlobs[l.info.Digest.Hex] {
			if size, ok := inv.blobs[l.info.Digest.Hex]; ok && !p.blobs[l.info.Digest.Hex] {
				p.blobs[l.info.Digest.Hex] = true
				freed += size
			}
		}
		for _, r := range l.refs {
			if !p.steps[r] {
				p.steps[r] = true
				freed += r.size
			}
		}
	}

	// Blobs: whatever no image and no remaining layer uses.
	used := map[string]bool{}
	for hex := range inv.pinnedBlobs {
		used[hex] = true
	}
	for _, l := range inv.layers {
		if !p.layers[l] {
			used[l.info.Digest.Hex] = true
		}
	}
	for hex := range inv.blobs {
		if !used[hex] {
			p.blobs[hex] = true
		}
	}
	return p
}

// lruEntry is a layer or a cache mount that prune may remove.
type lruEntry struct {
	used  time.Time
	name  string
	layer *layerEntry
	mount *cacheMountEntry
}

// entrySize is what removing c frees: a layer with its own blob (unless
// an image uses that blob) and the step records that use it.
func (inv *inventory) entrySize(c lruEntry) int64 {
	if c.mount != nil {
		return c.mount.size
	}
	n := c.layer.size
	if !inv.pinnedBlobs[c.layer.info.Digest.Hex] {
		n += inv.blobs[c.layer.info.Digest.Hex]
	}
	for _, r := range c.layer.refs {
		n += r.size
	}
	return n
}

// stepsSize is the size of the step records a prune could remove that
// entrySize does not count: those of no candidate layer, not already
// debris.
func (inv *inventory) stepsSize(p *prunePlan, cands []lruEntry) int64 {
	counted := map[*stepEntry]bool{}
	for _, c := range cands {
		if c.layer != nil {
			for _, r := range c.layer.refs {
				counted[r] = true
			}
		}
	}
	var n int64
	for _, st := range inv.steps {
		if !counted[st] && !p.steps[st] && (st.layer == nil || inv.pinnedLayers[st.layer.info.DiffID.Hex]) {
			n += st.size
		}
	}
	return n
}

// debrisSize is what the plan frees before any layer is chosen: scratch,
// broken step records, half-made cache mounts and blobs that neither an
// image nor a layer uses.
func (p *prunePlan) debrisSize(inv *inventory) int64 {
	n := inv.tmpSize + inv.mountDebrisSize
	for st := range p.steps {
		n += st.size
	}
	layerBlobs := make(map[string]bool, len(inv.layers))
	for _, l := range inv.layers {
		layerBlobs[l.info.Digest.Hex] = true
	}
	for hex, size := range inv.blobs {
		if !inv.pinnedBlobs[hex] && !layerBlobs[hex] {
			n += size
		}
	}
	return n
}

func (inv *inventory) totalSize() int64 {
	n := inv.tmpSize + inv.imagesSize + inv.otherSize + inv.debugSize + inv.mountDebrisSize
	for _, size := range inv.blobs {
		n += size
	}
	for _, l := range inv.layers {
		n += l.size
	}
	for _, st := range inv.steps {
		n += st.size
	}
	for _, m := range inv.mounts {
		n += m.size
	}
	return n
}

func (p *prunePlan) report(inv *inventory) PruneReport {
	rep := PruneReport{Steps: len(p.steps), Layers: len(p.layers), Blobs: len(p.blobs), CacheMounts: len(p.mounts), TmpEntries: inv.tmpCount, DebugStates: inv.debugCount}
	rep.Reclaimed = inv.tmpSize + inv.mountDebrisSize
	for m := range p.mounts {
		rep.Reclaimed += m.size
	}
	for st := range p.steps {
		rep.Reclaimed += st.size
	}
	for l := range p.layers {
		rep.Reclaimed += l.size
	}
	for hex := range p.blobs {
		rep.Reclaimed += inv.blobs[hex]
	}
	rep.Remaining = inv.totalSize() - rep.Reclaimed
	rep.RemainingCache = inv.totalSize() - inv.imagesSize - inv.otherSize - inv.debugSize - inv.pinnedSize() - rep.Reclaimed
	return rep
}

// apply removes the plan's entries in an order that a crash at any point
// leaves consistent: step records before the layers they name (a record
// without its layer is a miss anyway), a layer directory renamed into
// ROOT/tmp before it is deleted (a half-deleted tree must never be visible
// as a layer: it would become a lowerdir), blobs last.
func (s *Store) apply(ctx context.Context, inv *inventory, p *prunePlan) error {
	s.clearTmp()
	for st := range p.steps {
		if err := os.Remove(st.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if len(p.steps) > 0 {
		if err := syncDir(filepath.Join(s.Root, "steps")); err != nil {
			return err
		}
	}
	dirs := append([]string(nil), inv.badLayers...)
	for l := range p.layers {
		dirs = append(dirs, l.dir)
	}
	for _, dir := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.removeLayerDir(dir, "prune-"); err != nil {
			return err
		}
	}
	// A cache mount goes the way of a layer: out of sight first, its
	// lock file (its last-use time) last.
	mountDirs := append([]string(nil), inv.mountDebris...)
	for m := range p.mounts {
		mountDirs = append(mountDirs, m.dir)
	}
	for _, dir := range mountDirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		trash, err := os.MkdirTemp(s.tmp(), "prune-")
		if err != nil {
			return err
		}
		if err := os.Rename(dir, filepath.Join(trash, "mount")); err != nil && !errors.Is(err, os.ErrNotExist) {
			os.Remove(trash)
			return err
		}
		if err := os.RemoveAll(trash); err != nil {
			return err
		}
		if err := os.Remove(dir + ".lock"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if len(mountDirs) > 0 {
		if err := syncDir(s.cacheMountsDir()); err != nil {
			return err
		}
	}
	for hex := range p.blobs {
		if err := os.Remove(filepath.Join(s.blobDir(), hex)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if len(p.blobs) > 0 {
		return syncDir(s.blobDir())
	}
	return nil
}

// removeLayerDir takes a layer directory out of sight in one rename (into
// a scratch directory named with prefix), makes that rename durable, then
// deletes it at leisure: a crash in the middle never leaves a half-deleted
// layer where a build would find it.
func (s *Store) removeLayerDir(dir, prefix string) error {
	trash, err := os.MkdirTemp(s.tmp(), prefix)
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(trash, "layer")); err != nil {
		os.Remove(trash)
		return err
	}
	if err := syncDir(s.layersDir()); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}
