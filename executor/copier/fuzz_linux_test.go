package copier

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/kiln-build/kiln/rooted"
)

// fuzzBytes hands out the fuzzer's input a byte at a time, then zeros.
type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) next() int {
	if len(f.b) == 0 {
		return 0
	}
	v := f.b[0]
	f.b = f.b[1:]
	return int(v)
}

func (f *fuzzBytes) pick(list []string) string { return list[f.next()%len(list)] }

// The vocabulary random trees and COPY specs are made of. "CANARY" in a
// symlink target is replaced by the host canary directory's path.
var (
	fuzzNames = []string{"a", "b", "dir", "sub", "link", "x.secret", "keep", ".git", "f*", "[ab]", "deep", "loop", "c d", ".wh.a"}
	fuzzLinks = []string{"/", "..", "../..", "../../..", "/etc", "CANARY", "CANARY/file", "../canary", "../../canary",
		"a", "dir", "/dir/sub", "loop", "link", "x.secret", "dir/x.secret", "/nonexistent/x", "sub/../..", "."}
	fuzzPatterns = []string{".git", "dir/**", "!dir/keep", "sub", "!sub/a", "**/b", "!**/keep", "f*", "[ab]", "deep/*", "/link"}
	fuzzSources  = []string{".", "/", "a", "dir", "dir/", "link", "link/..", "../../a", "*", "d*", "dir/*", "*/a", "link/*",
		"x.secret", "dir/x.secret", "sub/a", "deep/sub", "[ab]", "f\\*", "loop", "link/x.secret"}
	fuzzDests    = []string{"/", "/app/", "/app", "link", "link/", "/link/x", "../../out/", "/dir/sub/", "/dirlink/", "/abs/", "app/./"}
	fuzzDstLinks = map[string]string{"link": "../../canary", "dirlink": "CANARY", "abs": "/"}
)

// fuzzTree creates a random tree under root from f: files (a "*.secret"
// name holds the secret), directories, symlinks (absolute, relative,
// looping, into the canary) and FIFOs.
func fuzzTree(t *testing.T, f *fuzzBytes, root, canary string) {
	n := f.next() % 24
	dirs := []string{""}
	for i := 0; i < n; i++ {
		parent := dirs[f.next()%len(dirs)]
		name := f.pick(fuzzNames)
		p := filepath.Join(root, parent, name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		var err error
		switch f.next() % 5 {
		case 0, 1:
			content := fmt.Sprintf("file %d\n", i)
			if strings.HasSuffix(name, ".secret") {
				content = "SECRET\n"
			}
			err = os.WriteFile(p, []byte(content), fs.FileMode(0o600|f.next()&0o177))
		case 2:
			if err = os.Mkdir(p, 0o755); err == nil {
				dirs = append(dirs, filepath.Join(parent, name))
			}
		case 3:
			target := strings.ReplaceAll(f.pick(fuzzLinks), "CANARY", canary)
			err = os.Symlink(target, p)
		case 4:
			err = syscall.Mkfifo(p, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot describes every entry below dir (type, mode, owner, size,
// content digest, link target, mtime), for comparing before and after.
func snapshot(t *testing.T, dir string) string {
	var lines []string
	err := filepath.Walk(dir, func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d %d %d", p, fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// fuzzParents are COPY --parents sources: pivots, wildcards, symlinks
// and ".." on either side of the pivot.
var fuzzParents = []string{"dir/./sub", "link/./a", "*/./a", "../../x/./../../y", "./dir/**/a", "a/./../..", "link/./../../canary", "dir/./*"}

// fuzzExpectWith is fuzzExpect for an op with a selection.
func fuzzExpectWith(t *testing.T, src string, op Op) ([]Entry, bool) {
	if err := SelectAtWith(src, op.Sources, op.Excludes, op.Selection, func(string, string, fs.FileInfo, *rooted.Dir, string) error { return nil }); err != nil {
		return nil, false
	}
	return selectedEntries(t, src, op), true
}

// fuzzExpect is expectedEntries; false when Select fails, as then the
// build fails at hashing and never copies.
func fuzzExpect(t *testing.T, src string, sources, excludes []string) ([]Entry, bool) {
	if err := SelectAt(src, sources, excludes, func(string, string, fs.FileInfo, *rooted.Dir, string) error { return nil }); err != nil {
		return nil, false
	}
	return expectedEntries(t, src, sources, excludes), true
}

// FuzzCopy copies random COPY specs between random trees, with and
// without workers. Whatever the input: no panic, nothing outside the destination root changes (a canary
// directory beside it, and the source), and nothing .dockerignore excludes
// is copied.
func FuzzCopy(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root: the copier sets owners")
	}
	f.Add([]byte{})
	f.Add([]byte("\x10\x00\x02\x00\x02\x00\x05\x00\x00\x00\x03\x04\x05\x00\x00\x02\x04\x01\x00\x01\x02\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzBytes{b: data}
		tmp := t.TempDir()
		src, dst, canary := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst"), filepath.Join(tmp, "canary")
		for _, d := range []string{src, dst, canary, filepath.Join(dst, "dir")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(canary, "file"), []byte("canary\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for name, target := range fuzzDstLinks {
			if err := os.Symlink(strings.ReplaceAll(target, "CANARY", canary), filepath.Join(dst, name)); err != nil {
				t.Fatal(err)
			}
		}
		fuzzTree(t, in, src, canary)
		var excludes []string
		for i := in.next() % 4; i > 0; i-- {
			excludes = append(excludes, in.pick(fuzzPatterns))
		}
		// Last, so that no exception brings a secret back.
		excludes = append(excludes, "**/*.secret")
		op := Op{Kind: "copy", Dest: in.pick(fuzzDests), Excludes: excludes}
		for i := 1 + in.next()%3; i > 0; i-- {
			op.Sources = append(op.Sources, in.pick(fuzzSources))
		}
		if in.next()%4 == 0 {
			op.Chmod = "u=rwX,go=rX"
		}
		if in.next()%2 == 0 {
			// The copy must read exactly what the cache hashed: a spurious
			// "context changed" would fail good builds.
			op.Expect, op.Verify = fuzzExpect(t, src, op.Sources, op.Excludes)
		}
		switch in.next() % 4 {
		case 1:
			op.Selection.Excludes = []string{in.pick(fuzzPatterns), in.pick(fuzzPatterns)}
		case 2:
			op.Selection.Parents = true
			op.Sources = append(op.Sources, in.pick(fuzzParents))
		}
		if op.Verify {
			op.Expect, op.Verify = fuzzExpectWith(t, src, op)
		}
		var opt Options
		if in.next()%2 == 0 {
			opt.Workers = 2 // files on workers, as the copy child runs them
		}
		before := snapshot(t, canary) + snapshot(t, src)
		err := DoWith(src, dst, op, opt) // errors are fine; escapes and panics are not
		var cc *ContextChangedError
		if errors.As(err, &cc) {
			t.Fatalf("%+v: the copy disagrees with Select on an unchanged tree: %v", op, err)
		}
		if after := snapshot(t, canary) + snapshot(t, src); after != before {
			t.Fatalf("%+v changed something outside the destination:\n--- before\n%s\n--- after\n%s", op, before, after)
		}
		err = filepath.Walk(dst, func(p string, fi fs.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err == nil && bytes.Contains(b, []byte("SECRET")) {
				return fmt.Errorf("%s holds an excluded file's content", p)
			}
			return err
		})
		if err != nil {
			t.Fatalf("%+v: %v", op, err)
		}
	})
}
