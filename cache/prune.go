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
// and blob they use, are never removed. Debris is always removed: scratch
// left by killed builds, step records whose layer is gone, blobs nothing
// uses.
type PruneOptions struct {
	// All removes every step record and every layer no named image uses.
	// Without it, a layer stays while a step record that counts as recent
	// (see Until) uses it.
	All bool
	// Until, when positive, limits removal to entries unused for that
	// long: step records not hit, layers neither stored nor reached through
	// a step hit within Until. Without All, a layer no step record uses is
	// removed once it is that old.
	Until time.Duration
	// KeepStorage, when positive, stops removing once the store occupies
	// at most that many bytes, least recently used first. Without All or
	// Until, every entry no image uses is then a candidate.
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
	Steps, Layers, Blobs int
	// TmpEntries are leftovers of killed builds.
	TmpEntries int
	// Reclaimed is the disk space freed, in bytes.
	Reclaimed int64
	// Remaining is the disk space the store occupies afterwards.
	Remaining int64
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
	tmp    bool
}

func (inv *inventory) plan(opts PruneOptions, now time.Time) *prunePlan {
	p := &prunePlan{steps: map[*stepEntry]bool{}, layers: map[*layerEntry]bool{}, blobs: map[string]bool{}, tmp: true}
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

	// Layers no image uses, oldest use first.
	var cands []*layerEntry
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
			cands = append(cands, l)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		ti, tj := cands[i].lastUsed(), cands[j].lastUsed()
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return cands[i].dir < cands[j].dir
	})
	total := inv.totalSize()
	freed := p.debrisSize(inv)
	for _, l := range cands {
		if opts.KeepStorage > 0 && total-freed <= opts.KeepStorage {
			break
		}
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

// debrisSize is what the plan frees before any layer is chosen: scratch,
// broken step records and blobs that neither an image nor a layer uses.
func (p *prunePlan) debrisSize(inv *inventory) int64 {
	n := inv.tmpSize
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
	n := inv.tmpSize + inv.imagesSize + inv.otherSize
	for _, size := range inv.blobs {
		n += size
	}
	for _, l := range inv.layers {
		n += l.size
	}
	for _, st := range inv.steps {
		n += st.size
	}
	return n
}

func (p *prunePlan) report(inv *inventory) PruneReport {
	rep := PruneReport{Steps: len(p.steps), Layers: len(p.layers), Blobs: len(p.blobs), TmpEntries: inv.tmpCount}
	rep.Reclaimed = inv.tmpSize
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
		trash, err := os.MkdirTemp(s.tmp(), "prune-")
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
		if err := os.RemoveAll(trash); err != nil {
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
