package source

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/internal/testutil"
)

// FuzzReadContextTarHashed fuzzes the digests taken from a context
// archive as it streams by. Input: the archive, one entry per line in
// order ("f NAME C": a file of eight bytes C, so that files differ in
// content but not in size; "d NAME"; "l NAME TARGET" a symlink; "h NAME
// TARGET" a hardlink), applied to new files or to files from a pool.
//
// Invariant: when the archive unpacks, the context hash with the state
// contexthash.Seed makes from those digests is the one a fresh read of
// the unpacked files gives: a digest is never kept for a file that holds
// other bytes.
func FuzzReadContextTarHashed(f *testing.F) {
	for _, s := range []string{
		"f a x\nh b a\nf a y",
		"d s\nf s/f x\nd d\nf d/f y\nl s d\nh g s/f",
		"d real\nf real/f x\nl l real\nf l/f y",
		"f x x\nd x\nf x/y y\nd z\nf z/w w\nf z z",
		"f a x\nl a b\nf b y\nh c a",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, script string, pooled bool) {
		if len(script) > 1024 {
			return
		}
		var entries []testutil.TarEntry
		for _, line := range strings.Split(script, "\n") {
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			switch {
			case fields[0] == "f" && len(fields) == 3:
				entries = append(entries, testutil.File(fields[1], 0o644, strings.Repeat(fields[2][:1], 8)))
			case fields[0] == "d":
				entries = append(entries, testutil.Dir(fields[1], 0o755))
			case fields[0] == "l" && len(fields) == 3:
				entries = append(entries, testutil.Symlink(fields[1], fields[2]))
			case fields[0] == "h" && len(fields) == 3:
				entries = append(entries, testutil.Hardlink(fields[1], fields[2]))
			}
		}
		dir := t.TempDir()
		var pool *FilePool
		if pooled {
			pool = NewFilePool(dir, "pool-", 100)
			old := filepath.Join(dir, "old")
			if _, err := ReadContextTar(context.Background(), bytes.NewReader(tarBytes(t, []testutil.TarEntry{
				testutil.File("a", 0o644, "oooooooo"), testutil.File("b/c", 0o600, "pppppppp"),
			})), old); err != nil {
				t.Fatal(err)
			}
			pool.Fill(old)
		}
		out := filepath.Join(dir, "ctx")
		var archive bytes.Buffer
		tw := tar.NewWriter(&archive)
		if testutil.WriteEntries(tw, entries) != nil || tw.Close() != nil {
			return // no archive has it
		}
		_, sums, err := ReadContextTarHashed(context.Background(), &archive, out, nil, pool)
		if err != nil {
			return
		}
		seeded, fresh := filepath.Join(dir, "seeded"), filepath.Join(dir, "fresh")
		if err := contexthash.Seed(seeded, out, sums); err != nil {
			t.Fatal(err)
		}
		h, err := contexthash.Open(fresh, out)
		if err != nil {
			t.Fatal(err)
		}
		want, _, werr := h.Checksum([]string{"."}, nil)
		if werr != nil {
			return // a tree the hash refuses (a name it cannot frame)
		}
		if got := checksum(t, seeded, out); got != want {
			t.Errorf("checksum with the seeded state %s, read afresh %s (sums %v)", got, want, sums)
		}
		os.RemoveAll(dir)
	})
}
