package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// StepRecord is what a step with a given cache key produced.
//
//	ROOT/steps/<key>.json
type StepRecord struct {
	// Empty: the step changed no file, so it has no layer.
	Empty  bool
	DiffID v1.Hash
	// Created is when the step first ran: a cached rebuild reuses it, so
	// an unchanged build gives the very same image.
	Created time.Time
}

// stepFile is a StepRecord on disk; the diffID is a plain string because
// v1.Hash cannot encode its zero value (an empty step's).
type stepFile struct {
	Empty   bool      `json:"empty,omitempty"`
	DiffID  string    `json:"diffID,omitempty"`
	Created time.Time `json:"created,omitempty"`
}

func (s *Store) stepPath(key string) string {
	return filepath.Join(s.Root, "steps", key+".json")
}

// Step looks up the record of a step key. A record whose layer is gone
// (pruned, or lost) is a miss, never an error: the step simply runs again.
// A hit refreshes the record's mtime, which is what prune calls "used".
func (s *Store) Step(key string) (StepRecord, bool, error) {
	var rec StepRecord
	if !validKey(key) {
		return rec, false, fmt.Errorf("looking up step: malformed key %q", key)
	}
	p := s.stepPath(key)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("looking up step %s: %w", key, err)
	}
	var sf stepFile
	if err := json.Unmarshal(data, &sf); err != nil {
		// a record that does not decode is treated as absent and replaced
		return rec, false, nil
	}
	rec = StepRecord{Empty: sf.Empty, Created: sf.Created}
	if !rec.Empty {
		if rec.DiffID, err = v1.NewHash(sf.DiffID); err != nil {
			return rec, false, nil
		}
	}
	if !rec.Empty {
		if _, ok, err := s.LayerByDiffID(rec.DiffID); err != nil || !ok {
			return rec, false, nil
		}
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return rec, true, nil
}

// PutStep records what a step key produced, atomically.
func (s *Store) PutStep(key string, rec StepRecord) error {
	if !validKey(key) {
		return fmt.Errorf("recording step: malformed key %q", key)
	}
	sf := stepFile{Empty: rec.Empty, Created: rec.Created}
	if !rec.Empty {
		sf.DiffID = rec.DiffID.String()
	}
	data, err := json.Marshal(sf)
	if err != nil {
		return fmt.Errorf("recording step %s: %w", key, err)
	}
	dir := filepath.Join(s.Root, "steps")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("recording step %s: %w", key, err)
	}
	// A record is written without a sync of its own (one per step is
	// milliseconds a RUN cannot spare): the background syncer makes it
	// durable before the command exits, and one that a crash tore or lost
	// is a miss (Step), so the step runs again.
	if syncInline() {
		if err := s.writeAtomic(s.stepPath(key), data); err != nil {
			return fmt.Errorf("recording step %s: %w", key, err)
		}
		return nil
	}
	if err := s.writeUnsynced(s.stepPath(key), data); err != nil {
		return fmt.Errorf("recording step %s: %w", key, err)
	}
	s.published()
	return nil
}

// validKey accepts the hex keys the planner computes, so that a key can
// never name a path outside ROOT/steps.
func validKey(k string) bool {
	if len(k) < 16 || len(k) > 128 {
		return false
	}
	for _, c := range k {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
