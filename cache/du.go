package cache

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Usage is one kind of entry in the store.
type Usage struct {
	Count int
	// Size is bytes on disk (allocated blocks; a file hardlinked within
	// the store counts once).
	Size int64
	// Reclaimable is what `prune --all` would free: everything no named
	// image needs.
	Reclaimable int64
}

// DiskUsage is what the store holds.
type DiskUsage struct {
	Layers Usage // unpacked layers, ROOT/layers
	Blobs  Usage // compressed layers, manifests and configs, ROOT/blobs
	Steps  Usage // step records, ROOT/steps
	Images Usage // names, ROOT/images (their size is that of the records)
	// CacheMounts are the instances of RUN --mount=type=cache,
	// ROOT/cachemounts.
	CacheMounts Usage
	// Debug is what build --on-error=keep kept for kiln debug, ROOT/debug:
	// never pruned (kiln debug --rm removes a state), and the layers under
	// it are kept too.
	Debug Usage
	Tmp   Usage // scratch of running builds, or left by killed ones
	// Other is what other parts of kiln keep under the root (build logs,
	// context hashes…), which prune leaves alone; Count is top-level
	// entries.
	Other Usage
	Total Usage
}

// DiskUsage measures the store. It takes no lock: while builds run, the
// numbers are a snapshot that may already be out of date.
func (s *Store) DiskUsage() (DiskUsage, error) {
	inv, err := s.inventory()
	if err != nil {
		return DiskUsage{}, err
	}
	p := inv.plan(PruneOptions{All: true}, time.Now())
	var du DiskUsage
	du.Layers.Count = len(inv.layers)
	for _, l := range inv.layers {
		du.Layers.Size += l.size
		if p.layers[l] {
			du.Layers.Reclaimable += l.size
		}
	}
	du.Blobs.Count = len(inv.blobs)
	for hex, size := range inv.blobs {
		du.Blobs.Size += size
		if p.blobs[hex] {
			du.Blobs.Reclaimable += size
		}
	}
	du.Steps.Count = len(inv.steps)
	for _, st := range inv.steps {
		du.Steps.Size += st.size
		if p.steps[st] {
			du.Steps.Reclaimable += st.size
		}
	}
	du.Images.Count = len(inv.images)
	du.Images.Size = inv.imagesSize
	du.CacheMounts.Count = len(inv.mounts)
	du.CacheMounts.Size = inv.mountDebrisSize
	du.CacheMounts.Reclaimable = inv.mountDebrisSize
	for _, m := range inv.mounts {
		du.CacheMounts.Size += m.size
		if p.mounts[m] {
			du.CacheMounts.Reclaimable += m.size
		}
	}
	du.Debug = Usage{Count: inv.debugCount, Size: inv.debugSize}
	du.Tmp = Usage{Count: inv.tmpCount, Size: inv.tmpSize}
	if p.tmp {
		du.Tmp.Reclaimable = inv.tmpSize
	}
	du.Other = Usage{Count: inv.otherCount, Size: inv.otherSize}
	for _, u := range []Usage{du.Layers, du.Blobs, du.Steps, du.Images, du.CacheMounts, du.Debug, du.Tmp, du.Other} {
		du.Total.Count += u.Count
		du.Total.Size += u.Size
		du.Total.Reclaimable += u.Reclaimable
	}
	return du, nil
}

// inventory is everything in the store, with what uses what.
type inventory struct {
	steps  []*stepEntry
	layers map[string]*layerEntry // by diffID hex
	// badLayers are layer directories without a readable info.json:
	// never produced by publish, so debris.
	badLayers []string
	blobs     map[string]int64 // hex → size
	images    []imageRecord
	// pinned: what named images (and, for layers, kept debug states) use,
	// never pruned.
	pinnedBlobs  map[string]bool
	pinnedLayers map[string]bool // diffID hex
	imagesSize   int64
	mounts       []*cacheMountEntry
	// mountDebris are instances a crash left half made (.new-*) and lock
	// files whose instance is gone.
	mountDebris     []string
	mountDebrisSize int64
	debugCount      int
	debugSize       int64
	tmpCount        int
	tmpSize         int64
	otherCount      int
	otherSize       int64
}

type stepEntry struct {
	path    string
	used    time.Time // mtime, refreshed on every hit
	size    int64
	valid   bool // decodes
	rec     StepRecord
	layer   *layerEntry // nil for an empty step or a missing layer
	missing bool        // names a layer that is not stored: a miss anyway
}

type layerEntry struct {
	dir    string
	info   infoFile
	stored time.Time // mtime of the directory: when it was published
	size   int64     // the directory; the blob is counted with blobs
	refs   []*stepEntry
}

// cacheMountEntry is an instance of a cache mount.
type cacheMountEntry struct {
	dir  string
	used time.Time // its lock file's mtime, else its own
	size int64
}

// lastUsed is when the layer was last stored or hit through a step record.
func (l *layerEntry) lastUsed() time.Time {
	t := l.stored
	for _, r := range l.refs {
		if r.used.After(t) {
			t = r.used
		}
	}
	return t
}

func (s *Store) inventory() (*inventory, error) {
	inv := &inventory{
		layers:       map[string]*layerEntry{},
		blobs:        map[string]int64{},
		pinnedBlobs:  map[string]bool{},
		pinnedLayers: map[string]bool{},
	}
	seen := map[fileID]bool{}

	ents, err := readDirIfExists(s.blobDir())
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			inv.blobs[e.Name()] = diskSize(fi, seen)
		}
	}

	ents, err = readDirIfExists(s.layersDir())
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		dir := filepath.Join(s.layersDir(), e.Name())
		fi, err := e.Info()
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "info.json"))
		var info infoFile
		if err == nil {
			err = json.Unmarshal(data, &info)
		}
		if err == nil {
			err = checkHash(info.DiffID)
		}
		if err != nil || info.DiffID.Hex[:24] != e.Name() {
			inv.badLayers = append(inv.badLayers, dir)
			continue
		}
		inv.layers[info.DiffID.Hex] = &layerEntry{dir: dir, info: info, stored: fi.ModTime(), size: treeSize(dir, seen)}
	}

	stepsDir := filepath.Join(s.Root, "steps")
	ents, err = readDirIfExists(stepsDir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		st := &stepEntry{path: filepath.Join(stepsDir, e.Name()), used: fi.ModTime(), size: diskSize(fi, seen)}
		st.rec, st.valid = readStepRecord(st.path)
		if st.valid && !st.rec.Empty {
			if l := inv.layers[st.rec.DiffID.Hex]; l != nil && l.info.DiffID == st.rec.DiffID {
				st.layer = l
				l.refs = append(l.refs, st)
			} else {
				st.missing = true
			}
		}
		inv.steps = append(inv.steps, st)
	}

	recs, err := s.imageRecords()
	if err != nil {
		return nil, err
	}
	inv.images = recs
	if ents, err := readDirIfExists(s.imagesDir()); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				inv.imagesSize += diskSize(fi, seen)
			}
		}
	}
	for _, r := range recs {
		// A broken image pins what can still be read of it rather than
		// failing du and prune: the user removes it with rmi.
		inv.pinnedBlobs[r.Digest.Hex] = true
		m, _, err := s.readManifest(r.Digest)
		if err != nil {
			continue
		}
		inv.pinnedBlobs[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			inv.pinnedBlobs[l.Digest.Hex] = true
		}
		raw, err := s.readBlob(m.Config.Digest)
		if err != nil {
			continue
		}
		cfg, err := v1.ParseConfigFile(strings.NewReader(string(raw)))
		if err != nil {
			continue
		}
		for _, d := range cfg.RootFS.DiffIDs {
			inv.pinnedLayers[d.Hex] = true
			// the layer's own blob too, when the image names a different
			// compression of it
			if l := inv.layers[d.Hex]; l != nil {
				inv.pinnedBlobs[l.info.Digest.Hex] = true
			}
		}
	}

	if err := s.inventoryMounts(inv, seen); err != nil {
		return nil, err
	}
	if err := s.inventoryDebug(inv, seen); err != nil {
		return nil, err
	}

	ents, err = readDirIfExists(s.tmp())
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		inv.tmpCount++
		inv.tmpSize += treeSize(filepath.Join(s.tmp(), e.Name()), seen)
	}

	ents, err = readDirIfExists(s.Root)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		switch e.Name() {
		case "blobs", "layers", "steps", "images", "tmp", "lock", "cachemounts", "debug", "durable":
			continue
		}
		inv.otherCount++
		inv.otherSize += treeSize(filepath.Join(s.Root, e.Name()), seen)
	}
	return inv, nil
}

// pinnedSize is what images and kept debug states hold in layers and blobs.
func (inv *inventory) pinnedSize() int64 {
	blobs := map[string]bool{}
	for hex := range inv.pinnedBlobs {
		blobs[hex] = true
	}
	var n int64
	for hex, l := range inv.layers {
		if inv.pinnedLayers[hex] {
			n += l.size
			blobs[l.info.Digest.Hex] = true
		}
	}
	for hex := range blobs {
		n += inv.blobs[hex]
	}
	return n
}

func (s *Store) inventoryMounts(inv *inventory, seen map[fileID]bool) error {
	ents, err := readDirIfExists(s.cacheMountsDir())
	if err != nil {
		return err
	}
	present := map[string]bool{}
	for _, e := range ents {
		present[e.Name()] = true
	}
	for _, e := range ents {
		n, path := e.Name(), filepath.Join(s.cacheMountsDir(), e.Name())
		switch {
		case strings.HasPrefix(n, "."):
			inv.mountDebris = append(inv.mountDebris, path)
			inv.mountDebrisSize += treeSize(path, seen)
		case strings.HasSuffix(n, ".lock"):
			if !present[strings.TrimSuffix(n, ".lock")] {
				// apply removes NAME.lock with NAME
				inv.mountDebris = append(inv.mountDebris, strings.TrimSuffix(path, ".lock"))
				inv.mountDebrisSize += treeSize(path, seen)
			}
		default:
			fi, err := e.Info()
			if err != nil {
				continue
			}
			m := &cacheMountEntry{dir: path, used: fi.ModTime(), size: treeSize(path, seen)}
			if li, err := os.Stat(path + ".lock"); err == nil {
				m.used = li.ModTime()
				m.size += diskSize(li, seen)
			}
			inv.mounts = append(inv.mounts, m)
		}
	}
	return nil
}

// inventoryDebug pins the layers under the states build --on-error=keep
// kept in ROOT/debug/BUILD/step-*/state.json, whose "lowers" name layer
// directories: kiln debug needs them until kiln debug --rm.
func (s *Store) inventoryDebug(inv *inventory, seen map[fileID]bool) error {
	dir := filepath.Join(s.Root, "debug")
	builds, err := readDirIfExists(dir)
	if err != nil {
		return err
	}
	byDir := map[string]string{} // layer dir name → diffID hex
	for hex, l := range inv.layers {
		byDir[filepath.Base(l.dir)] = hex
	}
	for _, b := range builds {
		inv.debugCount++
		inv.debugSize += treeSize(filepath.Join(dir, b.Name()), seen)
		states, _ := filepath.Glob(filepath.Join(dir, b.Name(), "step-*", "state.json"))
		for _, st := range states {
			var state struct {
				Lowers []string `json:"lowers"`
			}
			data, err := os.ReadFile(st)
			if err != nil || json.Unmarshal(data, &state) != nil {
				continue
			}
			for _, l := range state.Lowers {
				rel, err := filepath.Rel(s.layersDir(), l)
				if err != nil || strings.HasPrefix(rel, "..") {
					continue
				}
				name, _, _ := strings.Cut(rel, string(filepath.Separator))
				if hex, ok := byDir[name]; ok {
					inv.pinnedLayers[hex] = true
				}
			}
		}
	}
	return nil
}

func readDirIfExists(dir string) ([]fs.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return ents, err
}

// treeSize is the disk usage of a tree. Entries that vanish while it walks
// (a build finishing) are skipped: du is a snapshot.
func treeSize(root string, seen map[fileID]bool) int64 {
	var n int64
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += diskSize(fi, seen)
		}
		return nil
	})
	return n
}

// readStepRecord decodes a step record leniently: an empty step's record
// may carry a zero diffID spelled ":", which v1.Hash does not parse.
func readStepRecord(path string) (StepRecord, bool) {
	var raw struct {
		Empty  bool   `json:"empty"`
		DiffID string `json:"diffID"`
	}
	data, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(data, &raw) != nil {
		return StepRecord{}, false
	}
	if raw.Empty {
		return StepRecord{Empty: true}, true
	}
	h, err := v1.NewHash(raw.DiffID)
	if err != nil {
		return StepRecord{}, false
	}
	return StepRecord{DiffID: h}, true
}
