package copier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/rooted"
)

// expectedEntries computes what the build cache hashes for a COPY, the
// way contexthash does (Select order, Record digests).
func expectedEntries(t testing.TB, srcRoot string, sources, excludes []string) []Entry {
	t.Helper()
	var out []Entry
	err := SelectAt(srcRoot, sources, excludes, func(_, rel string, fi fs.FileInfo, dir *rooted.Dir, name string) error {
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

// TestVerifyContextChanged changes the context between hashing and
// copying: the copy must fail naming the file, never land other bytes
// under the key.
func TestVerifyContextChanged(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name    string
		sources []string
		change  func(src string) error
		want    string // the path the error names; "" for success
	}{
		{name: "unchanged", sources: []string{"."}},
		{name: "file edited", sources: []string{"."}, want: "dir/b.txt",
			change: func(src string) error {
				return os.WriteFile(filepath.Join(src, "dir/b.txt"), []byte("changed\n"), 0o644)
			}},
		{name: "file added", sources: []string{"."}, want: "dir/a2.txt",
			change: func(src string) error { return os.WriteFile(filepath.Join(src, "dir/a2.txt"), nil, 0o644) }},
		{name: "file removed", sources: []string{"."}, want: "dir/b.txt",
			change: func(src string) error { return os.Remove(filepath.Join(src, "dir/b.txt")) }},
		{name: "mode changed", sources: []string{"a.txt"}, want: "a.txt",
			change: func(src string) error { return os.Chmod(filepath.Join(src, "a.txt"), 0o600) }},
		{name: "link retargeted", sources: []string{"dir"}, want: "dir/link",
			change: func(src string) error {
				os.Remove(filepath.Join(src, "dir/link"))
				return os.Symlink("elsewhere", filepath.Join(src, "dir/link"))
			}},
		{name: "excluded file edited", sources: []string{"."},
			change: func(src string) error { return os.WriteFile(filepath.Join(src, "secret.env"), []byte("new"), 0o644) }},
		{name: "ADD of an edited file", sources: []string{"a.txt"}, want: "a.txt",
			change: func(src string) error { return os.WriteFile(filepath.Join(src, "a.txt"), []byte("x"), 0o644) }},
	}
	for _, tc := range cases {
		for _, workers := range []int{0, 4} {
			name := tc.name
			if workers > 0 {
				name += ", files on workers"
			}
			t.Run(name, func(t *testing.T) { verifyCase(t, tc.name, tc.sources, tc.change, tc.want, Options{Workers: workers}) })
		}
	}
}

// verifyCase copies a small context with the key computed before change
// runs; want is the path the ContextChangedError must name ("": none).
func verifyCase(t *testing.T, name string, sources []string, change func(src string) error, want string, opt Options) {
	tmp := t.TempDir()
	src, dst := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
	b := builder{t, src}
	b.file("a.txt", "alpha\n", 0o644)
	b.file("dir/b.txt", "bravo\n", 0o644)
	b.symlink("dir/link", "../a.txt")
	b.file("secret.env", "x", 0o600)
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	excludes := []string{"*.env"}
	op := Op{Kind: "copy", Sources: sources, Dest: "/app/", Excludes: excludes, Verify: true,
		Expect: expectedEntries(t, src, sources, excludes)}
	if strings.HasPrefix(name, "ADD") {
		op.Kind = "add"
	}
	if change != nil {
		testHookBeforeCopy = func() {
			if err := change(src); err != nil {
				t.Error(err)
			}
		}
		defer func() { testHookBeforeCopy = nil }()
	}
	err := DoWith(src, dst, op, opt)
	if want == "" {
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		return
	}
	var cc *ContextChangedError
	if !errors.As(err, &cc) || cc.Path != want {
		t.Fatalf("error %v, want a ContextChangedError naming %s", err, want)
	}
	msg := "the build context changed while it was being copied: " + want + "; rerun the build"
	if err.Error() != msg {
		t.Errorf("message %q, want %q", err.Error(), msg)
	}
}

// TestUserFileFIFO plants a FIFO at /etc/passwd and /etc/group: looking a
// name up must fail clearly instead of blocking forever on the open.
func TestUserFileFIFO(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name, fifo string
		op         Op
	}{
		{"COPY --chown=name", "etc/passwd", Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/", Chown: "app"}},
		{"COPY --chown=uid:group", "etc/group", Op{Kind: "copy", Sources: []string{"a.txt"}, Dest: "/", Chown: "1:staff"}},
		{"WORKDIR as USER name", "etc/passwd", Op{Kind: "mkdir", Dest: "/work", User: "app"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			src, dst := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
			builder{t, src}.file("a.txt", "alpha\n", 0o644)
			builder{t, dst}.file("etc/hosts", "", 0o644)
			if err := syscall.Mkfifo(filepath.Join(dst, tc.fifo), 0o644); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- Do(src, dst, tc.op) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), "/"+tc.fifo) {
					t.Fatalf("error %v, want one saying /%s is not a regular file", err, tc.fifo)
				}
				if testing.Verbose() {
					t.Log(err)
				}
				if strings.Contains(err.Error(), tmp) {
					t.Errorf("error names a host path: %v", err)
				}
			case <-time.After(30 * time.Second):
				// Unblock the open so the goroutine can end.
				if f, err := os.OpenFile(filepath.Join(dst, tc.fifo), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
				t.Fatal("the lookup blocked on the FIFO")
			}
		})
	}
}

// TestWorkersLargeDirectory copies directories of more files than one job
// holds (batchFiles), verified, with and without workers: the trees must
// be the same, directory times included.
func TestWorkersLargeDirectory(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	b := builder{t, src}
	for i := range 2*batchFiles + 17 {
		b.file(fmt.Sprintf("big/f%04d", i), strings.Repeat("x", i), 0o644)
	}
	for i := range 40 {
		b.file(fmt.Sprintf("big/sub%d/g", i%5), "", 0o600)
		b.file(fmt.Sprintf("small%02d/h", i), "h", 0o640)
	}
	setTimesUnder(t, src, srcTime)
	sources := []string{"."}
	var got []string
	for _, opt := range []Options{{}, {Workers: 3}} {
		dst := filepath.Join(tmp, fmt.Sprintf("dst%d", opt.Workers))
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		op := Op{Kind: "copy", Sources: sources, Dest: "/app/", Verify: true, Expect: expectedEntries(t, src, sources, nil)}
		if err := DoWith(src, dst, op, opt); err != nil {
			t.Fatalf("workers %d: %v", opt.Workers, err)
		}
		got = append(got, listing(t, dst))
	}
	if got[0] != got[1] {
		t.Errorf("with workers the tree differs:\n%s\nwithout:\n%s", got[1], got[0])
	}
}
