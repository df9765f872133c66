package cache

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
)

// TestAtomicWritesSync: every record the store writes is synced as a file
// before it is renamed into place, and its directory is synced after —
// but for step records when the boot is known: a lost one is a miss, and
// the background syncer makes it durable (durable.go).
func TestAtomicWritesSync(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, s *Store) string // returns the record written
	}{
		{"image record", func(t *testing.T, s *Store) string {
			if err := s.PutImage(ctx, []string{"app"}, empty.Image); err != nil {
				t.Fatal(err)
			}
			return s.imagePath("docker.io/library/app:latest")
		}},
		{"variant record", func(t *testing.T, s *Store) string {
			info := commitTree(t, s)
			if _, err := s.Recompressed(ctx, []LayerInfo{info}, Compression{Kind: "zstd"}); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(s.Root, "variants", info.DiffID.Hex+"-zstd-0.json")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			var mu sync.Mutex
			var events []string
			syncFile = func(f *os.File) error {
				mu.Lock()
				events = append(events, f.Name())
				mu.Unlock()
				return f.Sync()
			}
			defer func() { syncFile = (*os.File).Sync }()
			rec := tc.write(t, s)
			if _, err := os.Stat(rec); err != nil {
				t.Fatal(err)
			}
			// the last write- temp synced, then rec's directory
			fileAt, dirAt := -1, -1
			for i, e := range events {
				if strings.HasPrefix(e, filepath.Join(s.tmp(), "write-")) {
					fileAt = i
				}
				// a layer's files are written in its staging directory,
				// renamed as a whole once synced
				dir := e == filepath.Dir(rec) || strings.HasPrefix(e, filepath.Join(s.tmp(), "layer-"))
				if dir && fileAt >= 0 && i > fileAt {
					dirAt = i
				}
			}
			if tc.name == "step record" && currentBoot() != "" {
				for _, e := range events {
					if strings.HasPrefix(e, filepath.Join(s.tmp(), "write-")) || e == filepath.Dir(rec) {
						t.Errorf("step record synced inline (%s): the commit of a step waits for it", e)
					}
				}
			} else if fileAt < 0 || dirAt < 0 {
				t.Errorf("%s: want a temp file synced, then %s; syncs were:\n%s", rec, filepath.Dir(rec), strings.Join(events, "\n"))
			}
			if left, _ := filepath.Glob(filepath.Join(s.tmp(), "write-*")); len(left) > 0 {
				t.Errorf("temp files left: %v", left)
			}
		})
	}
}
