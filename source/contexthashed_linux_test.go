package source

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/internal/testutil"
)

func tarBytes(t *testing.T, entries []testutil.TarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := testutil.WriteEntries(tw, entries); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checksum is the context hash of all of dir, with the state in memoDir.
func checksum(t *testing.T, memoDir, dir string) string {
	t.Helper()
	h, err := contexthash.Open(memoDir, dir)
	if err != nil {
		t.Fatal(err)
	}
	sum, _, err := h.Checksum([]string{"."}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestReadContextTarHashed: the digests taken from the stream, seeded
// into the context hash state, give the checksum a fresh read of the
// unpacked files gives, whatever the archive does to the paths it wrote
// (replacing them, linking them, writing through its own symlinks), with
// new files and with files taken from a pool filled by another context.
func TestReadContextTarHashed(t *testing.T) {
	same := func(c byte) string { return strings.Repeat(string(c), 100) }
	tests := []struct {
		name    string
		entries []testutil.TarEntry
		seeded  int // files the seeded state must know, at least
	}{
		{"plain", []testutil.TarEntry{
			testutil.Dir("d", 0o755), testutil.File("d/a", 0o644, "a\n"), testutil.File("b", 0o755, strings.Repeat("b", 200<<10)),
			testutil.File("empty", 0o600, ""), testutil.Symlink("l", "b"), testutil.Hardlink("h", "d/a"),
		}, 4},
		{"name written twice", []testutil.TarEntry{
			testutil.File("a", 0o644, same('x')), testutil.File("a", 0o644, same('y')), testutil.File("b", 0o644, "short"), testutil.File("b", 0o644, "longer body"),
		}, 2},
		{"hardlink target replaced", []testutil.TarEntry{
			testutil.File("a", 0o644, same('x')), testutil.Hardlink("h", "a"), testutil.File("a", 0o644, same('y')),
		}, 1},
		{"hardlink through a symlink that replaced a directory", []testutil.TarEntry{
			testutil.Dir("s", 0o755), testutil.File("s/f", 0o644, same('x')), testutil.Dir("d", 0o755), testutil.File("d/f", 0o644, same('y')),
			testutil.Symlink("s", "d"), testutil.Hardlink("g", "s/f"),
		}, 1},
		{"file becomes a directory and back", []testutil.TarEntry{
			testutil.File("x", 0o644, same('x')), testutil.Dir("x", 0o755), testutil.File("x/y", 0o644, same('y')),
			testutil.Dir("z", 0o755), testutil.File("z/w", 0o644, same('w')), testutil.File("z", 0o644, same('z')),
		}, 2},
		{"file written through a symlink", []testutil.TarEntry{
			testutil.Dir("real", 0o755), testutil.File("real/f", 0o644, same('x')), testutil.Symlink("l", "real"), testutil.File("l/f", 0o644, same('y')),
		}, 0},
		{"file replaced by a symlink", []testutil.TarEntry{
			testutil.File("a", 0o644, same('x')), testutil.Symlink("a", "b"), testutil.File("b", 0o644, same('y')),
		}, 1},
	}
	for _, tt := range tests {
		for _, pooled := range []bool{false, true} {
			name := tt.name
			if pooled {
				name += ", pooled files"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				var pool *FilePool
				if pooled {
					pool = NewFilePool(dir, "pool-", 100)
					old := filepath.Join(dir, "old")
					if _, err := ReadContextTar(context.Background(), bytes.NewReader(tarBytes(t, []testutil.TarEntry{
						testutil.File("a", 0o4755, same('o')), testutil.File("d/a", 0o644, "old content\n"), testutil.File("p", 0o644, same('p')),
					})), old); err != nil {
						t.Fatal(err)
					}
					// an xattr (as an ACL would be) keeps a file from reuse
					if err := unix.Setxattr(filepath.Join(old, "p"), "user.kiln-test", []byte("x"), 0); err != nil && err != unix.ENOTSUP {
						t.Fatal(err)
					}
					pool.Fill(old)
					if pool.Len() != 3 {
						t.Fatalf("pool holds %d files after filling it with 3", pool.Len())
					}
				}
				out := filepath.Join(dir, "ctx")
				isTar, sums, err := ReadContextTarHashed(context.Background(), bytes.NewReader(tarBytes(t, tt.entries)), out, nil, pool)
				if err != nil || !isTar {
					t.Fatalf("ReadContextTarHashed: %v, %v", isTar, err)
				}
				seeded, fresh := filepath.Join(dir, "seeded"), filepath.Join(dir, "fresh")
				if err := contexthash.Seed(seeded, out, sums); err != nil {
					t.Fatal(err)
				}
				if got, want := checksum(t, seeded, out), checksum(t, fresh, out); got != want {
					t.Errorf("checksum with the seeded state %s, read afresh %s (sums %v)", got, want, sums)
				}
				if memo, err := os.ReadFile(seededMemo(t, seeded)); err != nil || bytes.Count(memo, []byte("\n"))-1 < tt.seeded || tt.seeded == 0 && len(sums) > 0 {
					t.Errorf("seeded state:\n%s (%v); want %d files at least", memo, err, tt.seeded)
				}
				if pooled {
					if pool.Len() >= 3 {
						t.Errorf("the unpacking took no file of the pool: %d left", pool.Len())
					}
					filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
						if err == nil && fi.Mode().IsRegular() {
							if n, _ := unix.Listxattr(p, nil); n > 0 {
								t.Errorf("%s has xattrs it was not given", p)
							}
						}
						return nil
					})
				}
			})
		}
	}
}

func seededMemo(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.memo"))
	if err != nil || len(m) != 1 {
		t.Fatalf("state files in %s: %v, %v", dir, m, err)
	}
	return m[0]
}
