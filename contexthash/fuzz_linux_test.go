package contexthash_test

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/executor/copier"
)

// FuzzContextSelect fuzzes what a COPY reads from the build context:
// .dockerignore parsing (ignorefile), pattern matching (patternmatcher as
// the copier drives it), source resolution (wildcards, symlinks followed
// inside the context root) and the content hash of the selection.
//
// Inputs: tree, one entry per line ("f PATH", "d PATH", "l PATH TARGET",
// "h PATH EXISTING", "p PATH" for a FIFO; "$OUT" in a link target is the
// absolute path of a directory outside the context); the .dockerignore
// text; the COPY sources, one per line.
//
// Invariants: no panic and no hang; every selected path is a clean in-root
// path whose parents are real directories inside the root (so opening it
// cannot leave the root) and which names no file outside the root; a
// non-directory that .dockerignore excludes is never selected, and an
// excluded directory is selected only as the parent of something kept.
// Seeds are in testdata/fuzz/FuzzContextSelect.
func FuzzContextSelect(f *testing.F) {
	f.Fuzz(func(t *testing.T, tree, ignore, sources string) {
		if len(tree) > 2048 || len(ignore) > 1024 || len(sources) > 512 {
			return
		}
		base := t.TempDir()
		root, outside := filepath.Join(base, "ctx"), filepath.Join(base, "outside")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("outside\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		outsideIDs := inodes(t, outside)
		makeTree(root, outside, tree)

		patterns, err := ignorefile.ReadAll(strings.NewReader(ignore))
		if err != nil {
			return
		}
		var srcs []string
		for _, s := range strings.Split(sources, "\n") {
			if s != "" && len(srcs) < 4 {
				srcs = append(srcs, s)
			}
		}
		if len(srcs) == 0 {
			return
		}

		type sel struct {
			rel   string
			isDir bool
		}
		var selected []sel
		err = copier.Select(root, srcs, patterns, func(source, rel string, fi fs.FileInfo) error {
			checkInRoot(t, root, rel, fi, outsideIDs)
			selected = append(selected, sel{rel, fi.IsDir()})
			return nil
		})
		if err != nil {
			return // refusing is always allowed
		}
		if len(patterns) > 0 {
			pm, err := patternmatcher.New(patterns)
			if err != nil {
				t.Fatalf("Select accepted patterns patternmatcher refuses: %v", err)
			}
			excluded := func(rel string) bool {
				m, err := pm.MatchesOrParentMatches(strings.TrimPrefix(rel, "/"))
				return err == nil && m
			}
			for _, s := range selected {
				if s.rel == "/" || !excluded(s.rel) {
					continue
				}
				if !s.isDir {
					t.Fatalf("selected %s, which .dockerignore %q excludes", s.rel, patterns)
				}
				kept := false
				for _, c := range selected {
					if strings.HasPrefix(c.rel, s.rel+"/") && !excluded(c.rel) {
						kept = true
						break
					}
				}
				if !kept {
					t.Fatalf("selected directory %s, which .dockerignore %q excludes, yet nothing inside it is kept", s.rel, patterns)
				}
			}
		}

		h, err := contexthash.Open(t.TempDir(), root)
		if err != nil {
			t.Fatal(err)
		}
		_, entries, err := h.Checksum(srcs, patterns)
		if err != nil {
			return
		}
		for _, e := range entries {
			fi, err := os.Lstat(filepath.Join(root, e.Path))
			if err != nil {
				t.Fatalf("hashed %s, which is not in the context: %v", e.Path, err)
			}
			checkInRoot(t, root, e.Path, fi, outsideIDs)
		}
	})
}

type inode struct{ dev, ino uint64 }

// inodes lists the inodes of dir and everything below it.
func inodes(t *testing.T, dir string) map[inode]string {
	out := map[inode]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		out[inode{st.Dev, st.Ino}] = p
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkInRoot fails unless rel is a clean in-root path reached without
// crossing a symlink, fi describes that very entry, and it is not one of
// the files outside the root.
func checkInRoot(t *testing.T, root, rel string, fi fs.FileInfo, outside map[inode]string) {
	t.Helper()
	if !strings.HasPrefix(rel, "/") || path.Clean(rel) != rel {
		t.Fatalf("selected path %q is not a clean in-root path", rel)
	}
	comps := strings.Split(strings.TrimPrefix(rel, "/"), "/")
	p := root
	for _, c := range comps[:len(comps)-1] {
		if c == "" {
			break
		}
		p = filepath.Join(p, c)
		pfi, err := os.Lstat(p)
		if err != nil || !pfi.IsDir() {
			t.Fatalf("selected %s: its parent %s is not a directory inside the root (%v, %v)", rel, p, pfi, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, rel), &st); err != nil {
		t.Fatalf("selected %s: %v", rel, err)
	}
	sys := fi.Sys().(*syscall.Stat_t)
	if sys.Dev != st.Dev || sys.Ino != st.Ino {
		t.Fatalf("selected %s, but its file info describes another file", rel)
	}
	if p, ok := outside[inode{st.Dev, st.Ino}]; ok {
		t.Fatalf("selected %s, which is %s outside the context root", rel, p)
	}
}

// makeTree creates the entries the fuzzer described, strictly inside root:
// never through a symlink it made, never with a name that climbs out.
func makeTree(root, outside, tree string) {
	n := 0
	for _, line := range strings.Split(tree, "\n") {
		if n++; n > 32 {
			return
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			continue
		}
		rel := path.Clean("/" + f[1])
		if rel == "/" || len(rel) > 200 || strings.ContainsRune(rel, 0) {
			continue
		}
		dst := filepath.Join(root, rel)
		if !parentsAreDirs(root, rel) {
			continue
		}
		if _, err := os.Lstat(dst); err == nil {
			continue // never write into an entry made before: it may be a FIFO
		}
		switch f[0] {
		case "f":
			os.WriteFile(dst, []byte(line), 0o644)
		case "d":
			os.Mkdir(dst, 0o755)
		case "p":
			unix.Mkfifo(dst, 0o644)
		case "l":
			if len(f) == 3 && !strings.ContainsRune(f[2], 0) {
				os.Symlink(strings.ReplaceAll(f[2], "$OUT", outside), dst)
			}
		case "h":
			if len(f) == 3 {
				src := path.Clean("/" + f[2])
				if parentsAreDirs(root, src) {
					if fi, err := os.Lstat(filepath.Join(root, src)); err == nil && fi.Mode().IsRegular() {
						os.Link(filepath.Join(root, src), dst)
					}
				}
			}
		}
	}
}

// parentsAreDirs reports whether every parent of rel below root exists as
// a real directory, creating missing ones.
func parentsAreDirs(root, rel string) bool {
	p := root
	comps := strings.Split(strings.TrimPrefix(rel, "/"), "/")
	for _, c := range comps[:len(comps)-1] {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			if os.Mkdir(p, 0o755) != nil {
				return false
			}
			continue
		}
		if err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}
