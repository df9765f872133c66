package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// writerCase is a sequence of tars applied to one LayerDir.
type writerCase struct {
	name string
	tars [][]byte
}

// writerCases reorder, replace and remove what queued files touch.
func writerCases(t testing.TB) []writerCase {
	reg := func(name, data string) tarEntry { return tarEntry{name: name, typ: tar.TypeReg, data: data} }
	dirE := func(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir} }
	sym := func(name, target string) tarEntry { return tarEntry{name: name, typ: tar.TypeSymlink, link: target} }
	hard := func(name, target string) tarEntry { return tarEntry{name: name, typ: tar.TypeLink, link: target} }
	big := strings.Repeat("0123456789abcdef", 40000) // 640,000 bytes: three pieces
	mk := func(entries ...tarEntry) []byte { return makeTar(t, entries) }
	cases := []writerCase{
		{"dir replaces file", [][]byte{mk(reg("a", "1"), dirE("a/"), reg("a/b", "2"))}},
		{"file replaces dir with files", [][]byte{mk(dirE("d/"), reg("d/x", "x"), reg("d/y", "y"), reg("d", "file"))}},
		{"file replaces implicit dir", [][]byte{mk(reg("x/y/z", "1"), reg("x", "2"), reg("x2", "3"))}},
		{"same path twice", [][]byte{mk(reg("f", "1"), reg("f", "2"), reg("g", big), reg("g", "small"), reg("h", "small"), reg("h", big))}},
		{"hardlink to queued file", [][]byte{mk(reg("f", big), hard("h", "f"), reg("f", "3"), hard("i", "h"))}},
		{"hardlink to missing", [][]byte{mk(reg("f", "1"), hard("h", "g"), reg("z", "z"))}},
		{"symlink replaces file", [][]byte{mk(reg("f", "x"), sym("f", "target"), reg("g", "x"), sym("g/x", "t"))}},
		{"file under file", [][]byte{mk(reg("f", "x"), reg("f/g", "y"), reg("z", "z"))}},
		{"whiteout of queued tree", [][]byte{mk(reg("a/b/c", "1"), reg("a/b/d", big), reg(".wh.a", ""), reg("a", "after"))}},
		{"opaque", [][]byte{mk(dirE("o/"), reg("o/a", "a"), reg("o/.wh..wh..opq", ""), reg("o/b", "b"))}},
		{"read-only dir", [][]byte{mk(tarEntry{name: "ro/", typ: tar.TypeDir, mode: 0o555}, reg("ro/x", "x"), tarEntry{name: "ro/s", typ: tar.TypeReg, mode: 0o4755, uid: 7, gid: 8})}},
		{"refused xattr", [][]byte{mk(reg("a", "1"), tarEntry{name: "c", typ: tar.TypeReg, data: "c", pax: map[string]string{paxXattr + "security.capability": "bad"}}, reg("d", "d"), reg("e", "e"))}},
		{"xattrs", [][]byte{mk(tarEntry{name: "x", typ: tar.TypeReg, data: "x", pax: map[string]string{paxXattr + "user.a": "1", paxXattr + "security.capability": capNetBindService()}})}},
		{"second tar replaces dir", [][]byte{
			mk(dirE("p/"), reg("p/q", "q"), dirE("p/r/"), reg("p/r/s", "s")),
			mk(reg("p", "now a file"), reg("p/t", "refused"), reg("u", "u")),
		}},
		{"second tar replaces file", [][]byte{mk(reg("p", "1"), reg("q", big)), mk(reg("p", "2"), reg("q", "3"))}},
		{"mixed", [][]byte{mixedTar(t, 300, 1)}},
	}
	for _, s := range fuzzSeeds(t) {
		cases = append(cases, writerCase{"seed " + s.name, [][]byte{s.data}})
	}
	return cases
}

// TestWritersMatchSerial applies tars with the file writers and without
// them, and wants the same errors, and the same trees when both succeed.
func TestWritersMatchSerial(t *testing.T) {
	requireRoot(t)
	for _, tc := range writerCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := applyTree(t, tc.tars, true)
			got, gotErr := applyTree(t, tc.tars, false)
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Errorf("error with writers: %v\nserially: %v", gotErr, wantErr)
			}
			// After a failure the writers may have written files queued
			// behind the failed one: a failed unpack is discarded whole.
			if wantErr != nil {
				return
			}
			if diff := diffTrees(want, got); diff != "" {
				t.Errorf("trees differ (serial vs writers):\n%s", diff)
			}
		})
	}
}

// applyTree applies tars to a fresh LayerDir and describes the result.
func applyTree(t testing.TB, tars [][]byte, serial bool) (map[string]string, error) {
	tmp := ""
	if unix.Access("/dev/shm", unix.W_OK) == nil {
		tmp = "/dev/shm" // every fuzz input makes two trees
	}
	base, err := os.MkdirTemp(tmp, "kiln-writers-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forceRemove(base) })
	dir := filepath.Join(base, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := rooted.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	a := NewApplier(root, Options{Sink: LayerDir})
	a.serial = serial
	defer a.Close()
	for _, tb := range tars {
		if err = a.Apply(context.Background(), bytes.NewReader(tb)); err != nil {
			break
		}
	}
	if err == nil {
		err = a.Finish(root)
	}
	// Messages name the root's temporary path.
	if err != nil {
		err = fmt.Errorf("%s", strings.ReplaceAll(err.Error(), dir, "ROOT"))
	}
	return describeTree(t, dir), err
}

// describeTree renders every path below dir: type, mode, owner, size,
// mtime, link count, which earlier path shares its inode, content digest
// or link target, xattrs.
func describeTree(t testing.TB, dir string) map[string]string {
	out := map[string]string{}
	inodes := map[uint64]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%v %d:%d size=%d nlink=%d rdev=%d", fi.Mode(), st.Uid, st.Gid, st.Size, st.Nlink, st.Rdev)
		// An implicit directory's mtime is when it was made, and so is
		// that of a file whose attributes failed.
		if rel != "." && time.Since(fi.ModTime()) > time.Hour {
			s += fmt.Sprintf(" mtime=%d.%d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		if first, ok := inodes[st.Ino]; ok {
			s += " same-inode-as=" + first
		} else {
			inodes[st.Ino] = rel
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" sha256=%x", sha256.Sum256(b))
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s += " -> " + target
		}
		buf := make([]byte, 4096)
		if n, err := unix.Llistxattr(p, buf); err == nil {
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			slices.Sort(names)
			for _, name := range names {
				if name == "" || name == "security.selinux" {
					continue
				}
				v := make([]byte, 4096)
				m, _ := unix.Lgetxattr(p, name, v)
				s += fmt.Sprintf(" %s=%q", name, v[:max(m, 0)])
			}
		}
		out[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(want, got map[string]string) string {
	var b strings.Builder
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	n := 0
	for _, p := range paths {
		if want[p] == got[p] {
			continue
		}
		if n++; n > 20 {
			b.WriteString("…\n")
			break
		}
		fmt.Fprintf(&b, "%s:\n  serial:  %s\n  writers: %s\n", p, want[p], got[p])
	}
	return b.String()
}

// mixedTar generates a layer of n files of mixed sizes, like a toolchain:
// most a few KiB, a quarter up to 64 KiB, one in a hundred 1-4 MiB, in
// directories of about 40 files, two levels deep, with a few symlinks
// and hardlinks.
func mixedTar(t testing.TB, n int, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	write := func(hdr *tar.Header, data []byte) {
		hdr.ModTime = fixedTime
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	content := make([]byte, 4<<20)
	for i := range content {
		content[i] = byte(rng.UintN(256))
	}
	dir := ""
	for i := range n {
		if i%40 == 0 {
			dir = fmt.Sprintf("usr/lib/d%02d/s%03d/", i/400, i/40)
			if i%400 == 0 {
				write(&tar.Header{Name: filepath.Dir(filepath.Dir(dir)) + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
			}
			write(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
		}
		name := fmt.Sprintf("%sf%05d", dir, i)
		switch r := rng.UintN(100); {
		case r == 0:
			write(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: "../s000/f00000", Mode: 0o777}, nil)
			continue
		case r == 1 && i > 0:
			write(&tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: fmt.Sprintf("%sf%05d", dir, i-1)}, nil)
			continue
		}
		var size int
		switch r := rng.UintN(100); {
		case r < 74:
			size = 64 + int(rng.UintN(4<<10))
		case r < 99:
			size = 4<<10 + int(rng.UintN(60<<10))
		default:
			size = 1<<20 + int(rng.UintN(3<<20))
		}
		off := int(rng.UintN(uint(len(content) - size + 1)))
		mode := int64(0o644)
		if rng.UintN(10) == 0 {
			mode = 0o755
		}
		write(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(size)}, content[off:off+size])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkUnpack unpacks a generated layer of 3,000 files of mixed sizes
// (about 60 MB), with the file writers and without them, into tmpfs when
// there is one: a disk would measure its own allocator (on a journal-less
// ext4 each new inode scans past those deleted in the last 30 s, which
// the previous iteration just did).
func BenchmarkUnpack(b *testing.B) {
	requireRoot(b)
	tarball := mixedTar(b, 3000, 1)
	entries := 0
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		if _, err := tr.Next(); err == io.EOF {
			break
		} else if err != nil {
			b.Fatal(err)
		}
		entries++
	}
	tmp := ""
	if unix.Access("/dev/shm", unix.W_OK) == nil {
		tmp = "/dev/shm"
	}
	for _, mode := range []struct {
		name   string
		serial bool
	}{{"writers", false}, {"serial", true}} {
		b.Run(mode.name, func(b *testing.B) {
			b.SetBytes(int64(len(tarball)))
			base, err := os.MkdirTemp(tmp, "kiln-bench-")
			if err != nil {
				b.Fatal(err)
			}
			defer forceRemove(base)
			for b.Loop() {
				b.StopTimer()
				dst, err := os.MkdirTemp(base, "")
				if err != nil {
					b.Fatal(err)
				}
				root, err := rooted.Open(dst)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				a := NewApplier(root, Options{Sink: LayerDir})
				a.serial = mode.serial
				if err := a.Apply(context.Background(), bytes.NewReader(tarball)); err != nil {
					b.Fatal(err)
				}
				if err := a.Finish(root); err != nil {
					b.Fatal(err)
				}
				a.Close()
				b.StopTimer()
				root.Close()
				os.RemoveAll(dst)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(entries), "µs/entry")
		})
	}
}

// FuzzUnpackWriters applies arbitrary tars to a LayerDir with the file
// writers and without them: the errors must be the same, and so must the
// trees when both succeed (a failed Apply may have applied more with the
// writers, which is why a failed unpack is discarded whole).
func FuzzUnpackWriters(f *testing.F) {
	for _, c := range writerCases(f) {
		if len(c.tars) == 1 && len(c.tars[0]) < 1<<20 {
			f.Add(c.tars[0])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if os.Geteuid() != 0 {
			t.Skip("needs root: a LayerDir is made with mknod and chown")
		}
		if !boundedTar(data) {
			t.Skip("declares more content than the fuzz bound")
		}
		want, wantErr := applyTree(t, [][]byte{data}, true)
		got, gotErr := applyTree(t, [][]byte{data}, false)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("error with writers: %v\nserially: %v", gotErr, wantErr)
		}
		if wantErr != nil {
			return
		}
		if diff := diffTrees(want, got); diff != "" {
			t.Fatalf("trees differ (serial vs writers):\n%s", diff)
		}
	})
}
