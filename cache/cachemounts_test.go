package cache

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestCacheMountSharing: BuildKit's three sharing modes. shared: one
// instance for every user at once; private: a step gets an instance no one
// else uses (a new one when all are busy, a free one again later); locked:
// a step waits until it has the instance alone.
func TestCacheMountSharing(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	init := CacheMountInit{Mode: 0o750, UID: 12, GID: 34}
	type use struct {
		sharing CacheSharing
		// same: the instance of an earlier use (by index) this one gets;
		// -1 a new one
		same int
		// blocks: the use waits (until the earlier ones release)
		blocks bool
	}
	for _, tc := range []struct {
		name string
		uses []use
	}{
		{"shared users share", []use{{CacheShared, -1, false}, {CacheShared, 0, false}, {CacheShared, 0, false}}},
		{"private beside shared gets its own", []use{{CacheShared, -1, false}, {CachePrivate, -1, false}, {CachePrivate, -1, false}}},
		{"private then shared", []use{{CachePrivate, -1, false}, {CacheShared, -1, false}, {CacheShared, 1, false}}},
		{"locked waits for shared", []use{{CacheShared, -1, false}, {CacheLocked, 0, true}}},
		{"locked waits for locked", []use{{CacheLocked, -1, false}, {CacheLocked, 0, true}}},
		{"private beside locked", []use{{CacheLocked, -1, false}, {CachePrivate, -1, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			var dirs []string
			var releases []func()
			defer func() {
				for _, r := range releases {
					r()
				}
			}()
			for i, u := range tc.uses {
				if u.blocks {
					waitCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
					_, _, err := s.CacheMount(waitCtx, "id", u.sharing, init)
					cancel()
					if err == nil {
						t.Fatalf("use %d did not wait", i)
					}
					// once the others are done it gets the instance
					for _, r := range releases {
						r()
					}
					releases = nil
				}
				dir, release, err := s.CacheMount(ctx, "id", u.sharing, init)
				if err != nil {
					t.Fatalf("use %d: %v", i, err)
				}
				releases = append(releases, release)
				if u.same >= 0 && dir != dirs[u.same] {
					t.Errorf("use %d got %s, want the instance of use %d, %s", i, dir, u.same, dirs[u.same])
				}
				if u.same < 0 {
					for j, d := range dirs {
						if d == dir {
							t.Errorf("use %d got the instance of use %d, want a new one", i, j)
						}
					}
				}
				fi, err := os.Stat(dir)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o750 || !fi.IsDir() {
					t.Errorf("instance %s: mode %v", dir, fi.Mode())
				}
				dirs = append(dirs, dir)
			}
		})
	}

	// A private mount takes a free instance again rather than making more.
	s := openStore(t)
	first, r1, err := s.CacheMount(ctx, "id", CachePrivate, init)
	if err != nil {
		t.Fatal(err)
	}
	second, r2, err := s.CacheMount(ctx, "id", CachePrivate, init)
	if err != nil {
		t.Fatal(err)
	}
	r1()
	r2()
	again, r3, err := s.CacheMount(ctx, "id", CachePrivate, init)
	if err != nil {
		t.Fatal(err)
	}
	r3()
	if again != first || first == second {
		t.Errorf("private instances %s, %s, then %s: want the first again", first, second, again)
	}
}
