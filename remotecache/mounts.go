package remotecache

import (
	"context"
	"fmt"
	"slices"

	"github.com/kiln-build/kiln/cache"
)

// SnapshotMounts returns the cache mounts ids as layers, for the targets
// with mounts=true. An id whose instance is in the store is that
// instance's layers: those it was restored from (or last exported as) and
// one more with what changed since, if anything did. An id with no
// instance here (its steps were all cache hits) keeps what imported holds
// for it. Any problem is told to warn, and the id keeps its imported
// layers, or is left out: an export never fails for a cache mount.
func SnapshotMounts(ctx context.Context, store *cache.Store, ids []string, imported *Records, warn func(string)) []Mount {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var out []Mount
	for _, id := range ids {
		m, ok, err := snapshotMount(ctx, store, id, imported)
		if err != nil {
			warn(fmt.Sprintf("exporting cache mount %q: %v", id, err))
			m, ok = imported.Mount(id)
		}
		if ok && len(m.Layers) > 0 {
			out = append(out, m)
		}
	}
	return out
}

func snapshotMount(ctx context.Context, store *cache.Store, id string, imported *Records) (Mount, bool, error) {
	snap, ok, err := store.SnapshotCacheMount(ctx, id, cache.MountSnapshotOptions{})
	if err != nil || !ok {
		if err == nil {
			m, ok := imported.Mount(id)
			return m, ok, nil
		}
		return Mount{}, false, err
	}
	layers, ok := available(store, snap.Layers, imported)
	if !ok {
		// A layer of the instance's state is gone from the store (pruned)
		// and no source offers it: one layer of the whole, then.
		if snap, ok, err = store.SnapshotCacheMount(ctx, id, cache.MountSnapshotOptions{Full: true}); err != nil || !ok {
			return Mount{}, false, err
		}
		layers = snap.Layers
	}
	out := Mount{ID: id, Layers: layers, Created: snap.Created}
	if m, ok := imported.Mount(id); ok && snap.Added.Digest.Hex == "" && sameBlobs(m.Layers, layers) {
		// restored and unchanged: the imported mount as it was, its
		// created time included, so the records keep their bytes
		out.Created = m.Created
	}
	return out, true, nil
}

func sameBlobs(a, b []cache.LayerInfo) bool {
	return slices.EqualFunc(a, b, func(x, y cache.LayerInfo) bool { return x.Digest == y.Digest && x.DiffID == y.DiffID })
}

// available returns layers with each one readable: its blob in the store,
// or else the same blob offered by an imported cache (a lazy layer, which
// a push to the same registry mounts).
func available(store *cache.Store, layers []cache.LayerInfo, imported *Records) ([]cache.LayerInfo, bool) {
	remote := map[string]cache.LayerInfo{}
	if imported != nil {
		for _, m := range imported.mounts {
			for _, l := range m.Layers {
				remote[l.Digest.String()] = l
			}
		}
		for _, e := range imported.m {
			if e.layer.Lazy() {
				remote[e.layer.Digest.String()] = e.layer
			}
		}
	}
	out := make([]cache.LayerInfo, len(layers))
	for i, l := range layers {
		switch r, ok := remote[l.Digest.String()]; {
		case store.HasBlob(l.Digest):
			out[i] = l
		case ok && r.DiffID == l.DiffID:
			out[i] = r
		default:
			return nil, false
		}
	}
	return out, true
}
