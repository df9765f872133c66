package copier

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/rooted"
)

// selectSrc is a tree like BuildKit's --exclude and --parents tests use.
func selectSrc(b builder) {
	b.file("dir1/file-101.png", "2", 0o600)
	b.file("dir1/file-102.txt", "3", 0o600)
	b.file("dir2/file-201.pdf", "6", 0o600)
	b.file("dir2/file-203.png", "8", 0o600)
	b.file("dir3/keep/x.png", "9", 0o644)
	b.symlink("dir4/link.txt", "file-401.txt")
	b.file("dir4/file-401.txt", "11", 0o600)
	b.file("hom.txt", "5", 0o644)
	b.file("test/a/b/c/d/foo", "foo", 0o644)
	b.file("test/a/b/c/d/e/bay", "bay", 0o644)
	b.file("test/a/b2/c/d/e/bar", "bar", 0o644)
	b.file("test/a/b/c2/d/e/baz", "baz", 0o644)
	b.file("test/a/b/c2/d/e2/baz", "baz2", 0o644)
	b.chmod("test/a/b", 0o700)
	b.chmod("test/a/b/c", 0o750)
}

func selectCases() []copyCase {
	excl := func(name string, sources []string, dest string, patterns ...string) copyCase {
		return copyCase{name: name, src: selectSrc, op: Op{Kind: "copy", Sources: sources, Dest: dest, Selection: Selection{Excludes: patterns}}}
	}
	parents := func(name string, sources []string, dest string, patterns ...string) copyCase {
		return copyCase{name: name, src: selectSrc, op: Op{Kind: "copy", Sources: sources, Dest: dest, Selection: Selection{Parents: true, Excludes: patterns}}}
	}
	return []copyCase{
		excl("exclude_images", []string{"."}, "/1", "*/*.png", "*/*.jpeg"),
		excl("exclude_under_wildcard", []string{"dir*"}, "/4/", "*.png", "*.pdf", "*.txt"),
		// the source itself is never matched, only what is below it
		excl("exclude_named_file", []string{"hom.txt"}, "/5/", "*.txt"),
		excl("exclude_exception", []string{"dir3"}, "/6/", "*", "!keep/x.png"),
		excl("exclude_dir", []string{"test"}, "/7/", "a/b"),
		parents("parents_file", []string{"test/a/b/c/d/foo"}, "/"),
		parents("parents_pivot", []string{"/test/a/b/./c/d"}, "/out/"),
		parents("parents_double_pivot", []string{"/test/a/./b/./c"}, "/out/"),
		parents("parents_wildcard_after_pivot", []string{"/test/a/./*/c"}, "/out/"),
		parents("parents_doublestar", []string{"/test/a/b*/./c/**/e"}, "/out/"),
		parents("parents_two_inputs", []string{"/test/a/b/c*/./d/**/baz", "/test/a/b*/./c/**/bar"}, "/out/"),
		parents("parents_glob", []string{"dir*/*.png"}, "/g/"),
		parents("parents_exclude", []string{"test"}, "/x/", "**/baz", "**/bay"),
		{name: "parents_missing", src: selectSrc, op: Op{Kind: "copy", Sources: []string{"test/nope"}, Dest: "/m/", Selection: Selection{Parents: true}},
			check: wantNotFound("test/nope", "")},
		// BuildKit: the path below the base is walked without following
		// symlinks, so a symlinked directory on it includes nothing
		{name: "parents_through_symlink", src: func(b builder) { selectSrc(b); b.symlink("t/zl", "../test/a") },
			op: Op{Kind: "copy", Sources: []string{"t/./zl/b"}, Dest: "/m/", Selection: Selection{Parents: true}}, check: wantNotFound("t/zl/b", "")},
		{name: "parents_symlink_named", src: func(b builder) { selectSrc(b); b.symlink("t/zl", "../test/a") },
			op: Op{Kind: "copy", Sources: []string{"t/./zl"}, Dest: "/m/", Selection: Selection{Parents: true}}},
		// and a symlinked base too, when no wildcard makes the path optional
		{name: "parents_symlinked_base", src: func(b builder) { selectSrc(b); b.symlink("t/zl", "../test/a") },
			op: Op{Kind: "copy", Sources: []string{"t/zl/./b/c"}, Dest: "/m/", Selection: Selection{Parents: true}}, check: wantNotFound("t/zl/b/c", "")},
		// not a selection: a cache mount seeded from a stage's directory
		// shows that directory's own owner and mode
		{name: "top_meta", src: func(b builder) { selectSrc(b); b.chown("test/a/b", 9, 9) },
			op: Op{Kind: "copy", Sources: []string{"test/a/b"}, Dest: "/m", FromStage: true, TopMeta: true}},
		{name: "parents_missing_wildcard", src: selectSrc, op: Op{Kind: "copy", Sources: []string{"test/a/b2*/c"}, Dest: "/m/", Selection: Selection{Parents: true}}},
	}
}

// TestSelection copies with --exclude and --parents (listings checked
// against BuildKit's documented results in the golden files).
func TestSelection(t *testing.T) {
	requireRoot(t)
	for _, tc := range selectCases() {
		t.Run(tc.name, func(t *testing.T) {
			runCase(t, tc.name, tc.src, tc.dst, func(string) Op { return tc.op }, tc.check)
		})
	}
}

// TestSelectionVerified: what Select reports for a selection is exactly
// what the copy reads, in its order, so that a verified copy succeeds.
func TestSelectionVerified(t *testing.T) {
	requireRoot(t)
	for _, tc := range selectCases() {
		if tc.check != nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			src, dst := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
			os.Mkdir(src, 0o755)
			os.Mkdir(dst, 0o755)
			tc.src(builder{t, src})
			op := tc.op
			op.Verify = true
			op.Expect = selectedEntries(t, src, op)
			for _, w := range []int{0, 4} {
				if err := DoWith(src, dst, op, Options{Workers: w}); err != nil {
					t.Fatalf("verified copy (workers %d): %v", w, err)
				}
			}
		})
	}
}

func selectedEntries(t *testing.T, srcRoot string, op Op) []Entry {
	t.Helper()
	var out []Entry
	err := SelectAtWith(srcRoot, op.Sources, op.Excludes, op.Selection, func(_, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error {
		content, link := "", ""
		switch {
		case fi.Mode().IsRegular():
			f, err := dir.OpenRegular(name)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			content = hex.EncodeToString(h.Sum(nil))
		case fi.Mode()&fs.ModeSymlink != 0:
			var err error
			if link, err = dir.Readlink(name); err != nil {
				return err
			}
		}
		out = append(out, Entry{Path: rel, Sum: EntrySum(Record(rel, fi, content, link))})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSelectionEscapes: --parents pivots and patterns with "..", symlinks
// in the source pointing at a host directory, and destination symlinks
// out of the root reach nothing outside the trees: the host canary is
// unchanged and none of its content lands in the destination.
func TestSelectionEscapes(t *testing.T) {
	requireRoot(t)
	c := testutil.NewCanary(t)
	cases := []struct {
		name    string
		sources []string
		dest    string
		sel     Selection
	}{
		{"dotdot before pivot", []string{"../../../../" + strings.TrimPrefix(c.Dir, "/") + "/./file"}, "/out/", Selection{Parents: true}},
		{"dotdot after pivot", []string{"a/./" + c.Rel()}, "/out/", Selection{Parents: true}},
		{"abs link as base", []string{"abs/./file"}, "/out/", Selection{Parents: true}},
		{"rel link as base", []string{"rel/./*"}, "/out/", Selection{Parents: true}},
		{"links under the base", []string{"a/**"}, "/out/", Selection{Parents: true}},
		{"into a dest link", []string{"a/b/./f"}, "/hostlink/", Selection{Parents: true}},
		{"lazy parent is a dest link", []string{"a/./b/f"}, "/d/", Selection{Parents: true}},
		{"exclude through links", []string{"a", "abs", "rel"}, "/x/", Selection{Excludes: []string{"*", "!**/file", "!b/f"}}},
		{"exclude into a dest link", []string{"a"}, "/hostlink/", Selection{Excludes: []string{"nothing"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			src, dst := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
			b := builder{t, src}
			os.MkdirAll(src, 0o755)
			os.MkdirAll(filepath.Join(dst, "d"), 0o755)
			b.file("a/b/f", "f\n", 0o644)
			b.symlink("a/abs", c.Dir)
			b.symlink("a/rel", c.Rel())
			b.symlink("abs", c.Dir)
			b.symlink("rel", c.Rel())
			for name, target := range map[string]string{"hostlink": c.Dir, "d/b": c.Rel()} {
				if err := os.Symlink(target, filepath.Join(dst, name)); err != nil {
					t.Fatal(err)
				}
			}
			op := Op{Kind: "copy", Sources: tc.sources, Dest: tc.dest, Selection: tc.sel, FromStage: true}
			for _, w := range []int{0, 2} {
				_ = DoWith(src, dst, op, Options{Workers: w}) // an error is fine, an escape is not
				c.Check(t)
			}
			canary, err := os.ReadFile(c.File())
			if err != nil {
				t.Fatal(err)
			}
			filepath.Walk(dst, func(p string, fi fs.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					if data, _ := os.ReadFile(p); len(canary) > 0 && bytes.Equal(data, canary) {
						t.Errorf("%s holds the host canary's content", p)
					}
				}
				return nil
			})
		})
	}
}
