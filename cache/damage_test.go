package cache

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestBadImageRecordSkipped: one unreadable image record, or one image
// whose manifest is gone, is skipped with a warning: the other images
// still list, du and prune still work, and a lookup by digest still finds
// the good image.
func TestBadImageRecordSkipped(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, s *Store)
	}{
		{"record is not JSON", func(t *testing.T, s *Store) {
			if err := os.WriteFile(s.imagePath("docker.io/library/broken:latest"), []byte("{trunc"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"record is unreadable", func(t *testing.T, s *Store) {
			// a directory where a record should be: read fails with EISDIR
			if err := os.Mkdir(s.imagePath("docker.io/library/broken:latest"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"manifest blob missing", func(t *testing.T, s *Store) {
			img := randomImage(t)
			if err := s.PutImage(ctx, []string{"broken"}, img); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(s.blobPath(digestOf(t, img))); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			var mu sync.Mutex
			var warnings []string
			s.Warn = func(m string) { mu.Lock(); warnings = append(warnings, m); mu.Unlock() }
			good := randomImage(t)
			if err := s.PutImage(ctx, []string{"good"}, good); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, s)

			entries, err := s.Images()
			if err != nil {
				t.Fatalf("Images: %v", err)
			}
			if len(entries) != 1 || entries[0].Name != "docker.io/library/good:latest" {
				t.Errorf("Images() = %+v, want only good", entries)
			}
			if _, err := s.DiskUsage(); err != nil {
				t.Errorf("DiskUsage: %v", err)
			}
			if _, err := s.Prune(ctx, PruneOptions{All: true}); err != nil {
				t.Errorf("Prune: %v", err)
			}
			ref := "good@" + digestOf(t, good).String()
			if img, ok, err := s.Image(ref); err != nil || !ok || digestOf(t, img) != digestOf(t, good) {
				t.Errorf("Image(%s) = %v, %v", ref, ok, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(warnings) == 0 || !strings.Contains(strings.Join(warnings, "\n"), "kiln ") {
				t.Errorf("warnings %q: want one that names the command that fixes it", warnings)
			}
		})
	}
}
