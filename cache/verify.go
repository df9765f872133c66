package cache

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// VerifyOptions selects what Verify does about what it finds.
type VerifyOptions struct {
	// Repair removes what is damaged: blobs that do not match their
	// digest, layer directories that do not match their contents list (or
	// whose blob is gone), the step records that name them, unreadable
	// image and step records. The next build fetches or rebuilds them.
	// It takes the store's lock exclusively, as Prune does.
	Repair bool
	// Wait is as in PruneOptions, for Repair.
	Wait func()
}

// Problem is one damaged entry of the store.
type Problem struct {
	// Kind is "blob", "layer", "image" or "step".
	Kind string
	// Name is the blob digest, layer diffID, image name or step key (or
	// the file name when the entry is too damaged to have one).
	Name string
	// What is wrong, in a few words; Details may list more.
	What    string
	Details []string
	// Images are the named images that need this entry: Repair keeps
	// their names, which stay broken until rebuilt, pulled or loaded again.
	Images []string
	// Repairable: Repair can remove the entry. An image whose blobs are
	// missing is not: its name stays until the image is built, pulled or
	// loaded again, or removed with rmi.
	Repairable bool
	// Repaired: Repair removed the entry (and what depends on it).
	Repaired bool
}

// VerifyReport is what Verify checked and found.
type VerifyReport struct {
	Blobs, Layers, Images, Steps int // entries checked
	// Unchecked are layers published by an older kiln, without a contents
	// list: their blob is checked, their directory cannot be.
	Unchecked []string
	Problems  []Problem
	// RemovedSteps counts the step records Repair removed (or would
	// remove) because they name a damaged layer.
	RemovedSteps int
}

// Verify checks the whole store: it re-digests every blob (a full read of
// ROOT/blobs, ~1.4 GB/s per core), walks every layer directory against the
// contents list written when it was published (one lstat per file), and
// reads every image and step record. With opts.Repair it removes what is
// damaged, so that the next build fetches or rebuilds it.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	if opts.Repair {
		unlock, err := s.lockExclusive(ctx, opts.Wait)
		if err != nil {
			return VerifyReport{}, fmt.Errorf("verifying %s: %w", s.Root, err)
		}
		defer unlock()
	}
	rep, plan, err := s.verify(ctx)
	if err != nil {
		return rep, fmt.Errorf("verifying %s: %w", s.Root, err)
	}
	if opts.Repair && len(rep.Problems) > 0 {
		if err := s.repair(ctx, &rep, plan); err != nil {
			return rep, fmt.Errorf("repairing %s: %w", s.Root, err)
		}
	}
	return rep, nil
}

// repairPlan is what repair removes.
type repairPlan struct {
	blobs      []string // paths
	layers     []string // layer directories
	layerDiffs map[string]bool
	records    []string // image and step record files
	problemIdx []int    // Problems the plan repairs
}

func (s *Store) verify(ctx context.Context) (VerifyReport, *repairPlan, error) {
	var rep VerifyReport
	plan := &repairPlan{layerDiffs: map[string]bool{}}
	add := func(p Problem) {
		p.Repairable = true
		rep.Problems = append(rep.Problems, p)
		plan.problemIdx = append(plan.problemIdx, len(rep.Problems)-1)
	}

	// Blobs: every one re-digested.
	badBlobs := map[string]bool{} // hex
	ents, err := readDirIfExists(s.blobDir())
	if err != nil {
		return rep, nil, err
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return rep, nil, err
		}
		rep.Blobs++
		path := filepath.Join(s.blobDir(), e.Name())
		want := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if _, err := hex.DecodeString(e.Name()); err != nil || len(e.Name()) != 64 || !e.Type().IsRegular() {
			add(Problem{Kind: "blob", Name: e.Name(), What: "not a blob (a stray file in " + s.blobDir() + ")"})
			plan.blobs = append(plan.blobs, path)
			continue
		}
		got, _, err := digestFile(path)
		switch {
		case err != nil:
			add(Problem{Kind: "blob", Name: want.String(), What: "unreadable: " + err.Error()})
		case got != want:
			add(Problem{Kind: "blob", Name: want.String(), What: "content has digest " + got.String()})
		default:
			continue
		}
		badBlobs[e.Name()] = true
		plan.blobs = append(plan.blobs, path)
	}

	// Layers: info.json, their blob, fs/ against the contents list.
	ents, err = readDirIfExists(s.layersDir())
	if err != nil {
		return rep, nil, err
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return rep, nil, err
		}
		rep.Layers++
		dir := filepath.Join(s.layersDir(), e.Name())
		info, err := readInfo(dir)
		if err == nil && info.DiffID.Hex[:24] != e.Name() {
			err = fmt.Errorf("info.json names layer %s", info.DiffID)
		}
		if err != nil {
			add(Problem{Kind: "layer", Name: e.Name(), What: err.Error()})
			plan.layers = append(plan.layers, dir)
			continue
		}
		p := Problem{Kind: "layer", Name: info.DiffID.String()}
		if s.suspect(info) {
			p.What = "stored without a sync before the machine restarted: its files may be incomplete"
		} else if badBlobs[info.Digest.Hex] {
			p.What = "its blob " + info.Digest.String() + " is damaged"
		} else if _, err := os.Lstat(s.blobPath(info.Digest)); err != nil {
			p.What = "its blob " + info.Digest.String() + " is missing"
		} else {
			diffs, err := checkContents(dir)
			switch {
			case errors.Is(err, errNoContents):
				rep.Unchecked = append(rep.Unchecked, info.DiffID.String())
				continue
			case err != nil:
				p.What = err.Error()
			case len(diffs) > 0:
				p.What = "fs/ differs from what was stored"
				p.Details = diffs
			default:
				continue
			}
		}
		add(p)
		plan.layers = append(plan.layers, dir)
		plan.layerDiffs[info.DiffID.Hex] = true
	}

	// Step records: readable; those naming a removed layer go with it.
	stepsDir := filepath.Join(s.Root, "steps")
	ents, err = readDirIfExists(stepsDir)
	if err != nil {
		return rep, nil, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		rep.Steps++
		path := filepath.Join(stepsDir, e.Name())
		rec, ok := readStepRecord(path)
		switch {
		case !ok:
			add(Problem{Kind: "step", Name: strings.TrimSuffix(e.Name(), ".json"), What: "unreadable record"})
			plan.records = append(plan.records, path)
		case !rec.Empty && plan.layerDiffs[rec.DiffID.Hex]:
			plan.records = append(plan.records, path)
			rep.RemovedSteps++
		}
	}

	// Image records: readable, and their manifest, config and layer
	// blobs present and intact.
	ents, err = readDirIfExists(s.imagesDir())
	if err != nil {
		return rep, nil, err
	}
	users := map[string][]string{} // blob hex → image names
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		rep.Images++
		path := filepath.Join(s.imagesDir(), e.Name())
		rec, err := s.readImageRecord(path)
		if err != nil {
			add(Problem{Kind: "image", Name: e.Name(), What: "unreadable record: " + err.Error()})
			plan.records = append(plan.records, path)
			continue
		}
		name := FamiliarImageName(rec.Name)
		blobs := []v1.Hash{rec.Digest}
		if raw, err := os.ReadFile(s.blobPath(rec.Digest)); err == nil {
			if m, err := v1.ParseManifest(bytes.NewReader(raw)); err == nil {
				blobs = append(blobs, m.Config.Digest)
				for _, l := range m.Layers {
					blobs = append(blobs, l.Digest)
				}
			}
		}
		var missing []string
		for _, b := range blobs {
			users[b.Hex] = append(users[b.Hex], name)
			if badBlobs[b.Hex] {
				continue // reported as a blob, with this image as a user
			}
			if _, err := os.Lstat(s.blobPath(b)); err != nil {
				missing = append(missing, b.String())
			}
		}
		if len(missing) > 0 {
			rep.Problems = append(rep.Problems, Problem{Kind: "image", Name: name, What: "blobs missing", Details: missing, Images: []string{name}})
		}
	}
	for i := range rep.Problems {
		p := &rep.Problems[i]
		if p.Kind == "blob" {
			p.Images = users[strings.TrimPrefix(p.Name, "sha256:")]
			sort.Strings(p.Images)
		}
	}
	return rep, plan, nil
}

func readInfo(dir string) (infoFile, error) {
	var info infoFile
	data, err := os.ReadFile(filepath.Join(dir, "info.json"))
	if err != nil {
		return info, fmt.Errorf("info.json unreadable: %w", err)
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, fmt.Errorf("info.json unreadable: %w", err)
	}
	if err := checkHash(info.DiffID); err != nil {
		return info, fmt.Errorf("info.json: %w", err)
	}
	return info, nil
}

// repair removes what verify found damaged, in the order prune removes
// things: records first, then layer directories (out of sight by rename
// before they are deleted), blobs last.
func (s *Store) repair(ctx context.Context, rep *VerifyReport, plan *repairPlan) error {
	s.clearTmp()
	for _, p := range plan.records {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	for _, dir := range []string{filepath.Join(s.Root, "steps"), s.imagesDir()} {
		if _, err := os.Stat(dir); err == nil {
			if err := syncDir(dir); err != nil {
				return err
			}
		}
	}
	// (A damaged blob took its layer directory into plan.layers: a layer
	// is exported from its blob, and the next pull or build makes both.)
	for _, dir := range plan.layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.removeLayerDir(dir, "repair-"); err != nil {
			return err
		}
	}
	for _, b := range plan.blobs {
		if err := os.RemoveAll(b); err != nil {
			return err
		}
	}
	if len(plan.blobs) > 0 {
		if err := syncDir(s.blobDir()); err != nil {
			return err
		}
	}
	for _, i := range plan.problemIdx {
		rep.Problems[i].Repaired = true
	}
	return nil
}
