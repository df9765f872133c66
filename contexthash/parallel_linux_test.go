package contexthash

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/rooted"
)

// serialChecksum is the context checksum computed the plain way, entry by
// entry in the walk's order, reading every file: what the parallel
// Checksum must reproduce, or cache keys would depend on timing.
func serialChecksum(t *testing.T, dir string, sources, excludes []string) (string, []Entry) {
	t.Helper()
	total := sha256.New()
	var entries []Entry
	last, first := "", true
	err := copier.SelectAt(dir, sources, excludes, func(source, rel string, fi fs.FileInfo, d *rooted.Dir, name string) error {
		if first || source != last {
			copier.Frame(total, "source", source)
		}
		first, last = false, source
		content, link := "", ""
		switch {
		case fi.Mode().IsRegular():
			f, err := d.OpenRegular(name)
			if err != nil {
				return err
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, f); err != nil {
				return err
			}
			content = hex.EncodeToString(h.Sum(nil))
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := d.Readlink(name)
			if err != nil {
				return err
			}
			link = l
		}
		rec := copier.Record(rel, fi, content, link)
		copier.Frame(total, "entry", string(rec))
		entries = append(entries, Entry{Path: rel, Sum: copier.EntrySum(rec)})
		return nil
	})
	must(t, err)
	return hex.EncodeToString(total.Sum(nil)), entries
}

// The parallel checksum equals the serial one on a tree of several
// batches, with several sources, symlinks, excludes, and the memo cold,
// warm and partly stale.
func TestChecksumParallelMatchesSerial(t *testing.T) {
	dir := t.TempDir()
	for d := 0; d < 5; d++ {
		for f := 0; f < 3*batchEntries/5; f++ {
			write(t, dir, fmt.Sprintf("d%d/f%04d.txt", d, f), fmt.Sprintf("file %d/%d\n", d, f))
		}
	}
	write(t, dir, "d1/skip.log", "excluded\n")
	must(t, os.Symlink("f0001.txt", filepath.Join(dir, "d2/link")))
	must(t, os.Symlink("d3", filepath.Join(dir, "dirlink")))
	tests := []struct {
		name              string
		sources, excludes []string
	}{
		{"whole context", []string{"."}, nil},
		{"several sources", []string{"d1", "d0/f0003.txt", "d2", "dirlink", "d4/f00*.txt"}, []string{"*/*.log"}},
		{"same source twice", []string{"d0", "d0"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			memo := t.TempDir()
			wantSum, wantEntries := serialChecksum(t, dir, tt.sources, tt.excludes)
			check := func(when string) {
				t.Helper()
				h, err := Open(memo, dir)
				must(t, err)
				sum, entries, err := h.Checksum(tt.sources, tt.excludes)
				must(t, err)
				must(t, h.Save())
				if sum != wantSum {
					t.Errorf("%s: checksum %s, want %s", when, sum, wantSum)
				}
				if !reflect.DeepEqual(entries, wantEntries) {
					t.Errorf("%s: %d entries differ from the serial walk's %d", when, len(entries), len(wantEntries))
				}
			}
			check("cold memo")
			check("warm memo")
			// a stale memo entry: content changed, stat moved
			p := filepath.Join(dir, "d0/f0003.txt")
			must(t, os.WriteFile(p, []byte("changed\n"), 0o644))
			wantSum, wantEntries = serialChecksum(t, dir, tt.sources, tt.excludes)
			check("stale entry")
			must(t, os.WriteFile(p, []byte("file 0/3\n"), 0o644))
		})
	}
}

// BenchmarkChecksumNoop is a no-op rebuild's context hash: 10,000 files
// in 50 directories, every digest in the memo, so one lstat per entry.
func BenchmarkChecksumNoop(b *testing.B) {
	dir, memo := b.TempDir(), b.TempDir()
	for d := 0; d < 50; d++ {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("d%02d", d)), 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < 200; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("d%02d/f%05d.txt", d, f)), []byte("x\n"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	h, err := Open(memo, dir)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := h.Checksum([]string{"."}, []string{".complete"}); err != nil {
		b.Fatal(err)
	}
	if err := h.Save(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, err := Open(memo, dir)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := h.Checksum([]string{"."}, []string{".complete"}); err != nil {
			b.Fatal(err)
		}
	}
}

// A prefetched checksum is the one Checksum would compute, for the same
// sources and excludes only; Save keeps what the prefetch read.
func TestPrefetch(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "src/a.txt", "a\n")
	write(t, dir, "src/b.log", "b\n")
	write(t, dir, "other.txt", "o\n")
	excludes := []string{"*/*.log"}
	for _, tt := range []struct {
		name                 string
		prefetch, sources    []string
		prefetchEx, excludes []string
	}{
		{"same sources", []string{"/src"}, []string{"/src"}, excludes, excludes},
		{"other sources", []string{"/"}, []string{"/src"}, excludes, excludes},
		{"other excludes", []string{"/src"}, []string{"/src"}, nil, excludes},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantSum, wantEntries := serialChecksum(t, dir, tt.sources, tt.excludes)
			memo := t.TempDir()
			h, err := Open(memo, dir)
			must(t, err)
			h.Prefetch(tt.prefetch, tt.prefetchEx)
			sum, entries, err := h.Checksum(tt.sources, tt.excludes)
			must(t, err)
			if sum != wantSum || !reflect.DeepEqual(entries, wantEntries) {
				t.Errorf("checksum %s (%d entries), want %s (%d)", sum, len(entries), wantSum, len(wantEntries))
			}
			must(t, h.Save())
			h2, err := Open(memo, dir)
			must(t, err)
			<-h2.loaded
			if _, ok := h2.memo["/src/a.txt"]; !ok {
				t.Error("the memo lacks what the build hashed")
			}
		})
	}
}
