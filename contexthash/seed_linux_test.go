package contexthash

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func sumOf(s string) FileSum {
	d := sha256.Sum256([]byte(s))
	return FileSum{Size: int64(len(s)), Sum: hex.EncodeToString(d[:])}
}

// TestSeed: Seed keeps a digest only for a regular file of the size
// hashed, reached without a symlink, and Checksum uses it until the file
// changes; Forget removes the state.
func TestSeed(t *testing.T) {
	wrong := sumOf("bbbb") // the size of "aaaa", other bytes
	tests := []struct {
		name   string
		sums   map[string]FileSum
		change func(t *testing.T, dir string)
		kept   []string // paths in the state
		used   bool     // the checksum is the seeded one, not the files'
	}{
		{"right digests", map[string]FileSum{"/a": sumOf("aaaa"), "/d/b": sumOf("b\n")}, nil, []string{"/a", "/d/b"}, false},
		{"a seeded digest is used", map[string]FileSum{"/a": wrong}, nil, []string{"/a"}, true},
		{"not once the file changed", map[string]FileSum{"/a": wrong}, func(t *testing.T, dir string) { write(t, dir, "a", "aaaa") }, []string{"/a"}, false},
		{"another size", map[string]FileSum{"/a": sumOf("aaaaa")}, nil, nil, false},
		{"not a regular file", map[string]FileSum{"/d": wrong, "/l": wrong}, nil, nil, false},
		{"through a symlink", map[string]FileSum{"/ld/b": sumOf("b\n")}, nil, nil, false},
		{"missing", map[string]FileSum{"/nope": wrong, "/d/nope/x": wrong}, nil, nil, false},
		{"malformed", map[string]FileSum{"/a": {Size: 4, Sum: "x"}, "a": wrong, "/d/../a": wrong}, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, seeded, fresh := t.TempDir(), t.TempDir(), t.TempDir()
			write(t, dir, "a", "aaaa")
			write(t, dir, "d/b", "b\n")
			must(t, os.Symlink("a", filepath.Join(dir, "l")))
			must(t, os.Symlink("d", filepath.Join(dir, "ld")))
			must(t, Seed(seeded, dir, tt.sums))
			p, err := memoFile(seeded, dir)
			must(t, err)
			data, err := os.ReadFile(p)
			must(t, err)
			var kept []string
			for k := range decodeMemo(data) {
				kept = append(kept, k)
			}
			sort.Strings(kept)
			if !reflect.DeepEqual(kept, tt.kept) {
				t.Errorf("state keeps %v, want %v", kept, tt.kept)
			}
			if tt.change != nil {
				tt.change(t, dir)
			}
			sum := func(memo string) string {
				h, err := Open(memo, dir)
				must(t, err)
				s, _, err := h.Checksum([]string{"."}, nil)
				must(t, err)
				return s
			}
			if used := sum(seeded) != sum(fresh); used != tt.used {
				t.Errorf("seeded digest used: %v, want %v", used, tt.used)
			}
			if len(tt.kept) == 2 && tt.change == nil {
				// every file seeded: hashing reads none (the state is
				// not dirtied by a digest it learnt)
				h, err := Open(seeded, dir)
				must(t, err)
				_, _, err = h.Checksum([]string{"."}, nil)
				must(t, err)
				if h.dirty {
					t.Errorf("hashing a fully seeded context read files")
				}
			}
			Forget(seeded, dir)
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("state after Forget: %v", err)
			}
		})
	}
}
