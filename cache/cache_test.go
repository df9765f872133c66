package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/layer"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "needs root: layers hold whiteout devices, foreign owners and trusted.* xattrs")
	}
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var fixedTime = time.Unix(1700000000, 0)

// buildTree fills dir with a small overlay-format tree: every kind of entry
// a step's upper dir can hold. Every call gives an identical tree.
func buildTree(t testing.TB, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "usr/bin/tool"), []byte("#!/bin/sh\necho tool\n"), 0o755))
	must(os.Chmod(filepath.Join(dir, "usr/bin/tool"), 0o4755))
	must(os.Link(filepath.Join(dir, "usr/bin/tool"), filepath.Join(dir, "usr/bin/tool-alias")))
	must(os.Symlink("tool", filepath.Join(dir, "usr/bin/t")))
	must(os.MkdirAll(filepath.Join(dir, "home/app"), 0o700))
	must(os.Chown(filepath.Join(dir, "home/app"), 1000, 1000))
	must(os.WriteFile(filepath.Join(dir, "home/app/data"), bytes.Repeat([]byte("data "), 10000), 0o600))
	must(os.Chown(filepath.Join(dir, "home/app/data"), 1000, 1000))
	must(unix.Mknod(filepath.Join(dir, "deleted"), unix.S_IFCHR, 0))
	must(os.MkdirAll(filepath.Join(dir, "var/cache"), 0o755))
	must(unix.Setxattr(filepath.Join(dir, "var/cache"), layer.OpaqueXattr, []byte("y"), 0))
	must(os.WriteFile(filepath.Join(dir, "var/cache/fresh"), nil, 0o644))
	stamp(t, dir)
}

// stamp pins every mtime below dir, deepest first.
func stamp(t testing.TB, dir string) {
	t.Helper()
	var paths []string
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(paths)
	ts := []unix.Timespec{unix.NsecToTimespec(fixedTime.UnixNano()), unix.NsecToTimespec(fixedTime.UnixNano())}
	for _, p := range paths {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func sha256File(t testing.TB, path string) (v1.Hash, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, n, err := v1.SHA256(f)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

func sha256Of(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func names(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// checkStored verifies info against the files of the store.
func checkStored(t *testing.T, s *Store, info LayerInfo) {
	t.Helper()
	digest, size := sha256File(t, s.blobPath(info.Digest))
	if digest != info.Digest || size != info.Size {
		t.Errorf("blob: sha256 %s size %d, info says %s size %d", digest, size, info.Digest, info.Size)
	}
	got, ok, err := s.LayerByDiffID(info.DiffID)
	if err != nil || !ok {
		t.Fatalf("LayerByDiffID(%s) = %v, %v", info.DiffID, ok, err)
	}
	if got != info {
		t.Errorf("LayerByDiffID = %+v, want %+v", got, info)
	}
	if want := filepath.Join(s.Root, "layers", info.DiffID.Hex[:24], "fs"); info.Dir != want {
		t.Errorf("Dir = %s, want %s", info.Dir, want)
	}
	fi, err := os.Stat(info.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("layer root mode %v, want 0755", fi.Mode())
	}
	if left := names(t, s.tmp()); len(left) != 0 {
		t.Errorf("ROOT/tmp not cleaned up: %v", left)
	}
}

func TestCommitDir(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	dir, err := s.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	buildTree(t, dir)
	var want bytes.Buffer
	if err := layer.WriteTar(ctx, dir, &want); err != nil {
		t.Fatal(err)
	}

	info, empty, err := s.CommitDir(ctx, dir)
	if err != nil || empty {
		t.Fatalf("CommitDir = %+v, %v, %v", info, empty, err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after CommitDir: %v", dir, err)
	}
	checkStored(t, s, info)
	if d := sha256Of(want.Bytes()); info.DiffID != d {
		t.Errorf("DiffID = %s, want sha256 of the tar %s", info.DiffID, d)
	}
	if info.MediaType != types.OCILayer {
		t.Errorf("MediaType = %s, want %s", info.MediaType, types.OCILayer)
	}
	// The fs/ dir is the committed tree itself.
	var again bytes.Buffer
	if err := layer.WriteTar(ctx, info.Dir, &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), want.Bytes()) {
		t.Error("tar of the stored fs/ differs from the tar of the committed dir")
	}
	// Deterministic gzip: no name, zero mtime; kiln's chunked gzip
	// (FEXTRA with the member length, and nothing else).
	blob, err := os.ReadFile(s.blobPath(info.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if flags, mtime := blob[3], blob[4:8]; flags != 0x04 || !bytes.Equal(mtime, []byte{0, 0, 0, 0}) {
		t.Errorf("gzip header flags %#x mtime %x, want FEXTRA alone (no name) and zero mtime", flags, mtime)
	}
	if sub := blob[12:14]; string(sub) != "KC" {
		t.Errorf("gzip extra subfield %q, want kiln's member length (KC)", sub)
	}
	for _, mt := range []types.MediaType{"", types.OCILayer, types.DockerLayer} {
		l := s.Layer(info, mt)
		if err := validate.Layer(l); err != nil {
			t.Errorf("validate.Layer(%q): %v", mt, err)
		}
		got, _ := l.MediaType()
		if want := cmp(mt, info.MediaType); got != want {
			t.Errorf("MediaType = %s, want %s", got, want)
		}
	}
}

func cmp[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

func TestCommitDirEmpty(t *testing.T) {
	s := openStore(t)
	dir, err := s.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	info, empty, err := s.CommitDir(context.Background(), dir)
	if err != nil || !empty || info != (LayerInfo{}) {
		t.Fatalf("CommitDir(empty) = %+v, %v, %v; want empty", info, empty, err)
	}
	if got := names(t, filepath.Join(s.Root, "layers")); len(got) != 0 {
		t.Errorf("layers/ = %v, want nothing stored", got)
	}
	if got := names(t, filepath.Join(s.Root, "blobs", "sha256")); len(got) != 0 {
		t.Errorf("blobs/ = %v, want nothing stored", got)
	}
}

func TestCommitDirTwice(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	var infos []LayerInfo
	for range 2 {
		dir, err := s.TempDir("upper-")
		if err != nil {
			t.Fatal(err)
		}
		buildTree(t, dir)
		info, _, err := s.CommitDir(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("duplicate %s not removed", dir)
		}
		infos = append(infos, info)
	}
	if infos[0] != infos[1] {
		t.Errorf("second commit = %+v, want %+v", infos[1], infos[0])
	}
	if got := names(t, filepath.Join(s.Root, "layers")); len(got) != 1 {
		t.Errorf("layers/ = %v, want one copy", got)
	}
	if got := names(t, filepath.Join(s.Root, "blobs", "sha256")); len(got) != 1 {
		t.Errorf("blobs/ = %v, want one copy", got)
	}
	checkStored(t, s, infos[0])
}

func TestCommitDirCancelled(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	dir, _ := s.TempDir("upper-")
	buildTree(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.CommitDir(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("CommitDir with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("dir should be left to the caller after an error: %v", err)
	}
	if got := names(t, s.tmp()); len(got) != 1 {
		t.Errorf("ROOT/tmp = %v, want only the caller's dir", got)
	}
}

func TestCommitDirOtherFilesystem(t *testing.T) {
	s := openStore(t)
	other, err := os.MkdirTemp("/dev/shm", "kiln-test-")
	if err != nil {
		testutil.SkipHostf(t, "no /dev/shm to stand in for another filesystem: %v", err)
	}
	defer os.RemoveAll(other)
	if same, _ := sameFilesystem(other, s.tmp()); same {
		testutil.SkipHost(t, "/dev/shm is on the store's filesystem here")
	}
	if err := os.WriteFile(filepath.Join(other, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.CommitDir(context.Background(), other)
	if err == nil || !strings.Contains(err.Error(), "store's filesystem") {
		t.Fatalf("CommitDir from another filesystem: %v, want a clear error", err)
	}
	if _, err := os.Stat(filepath.Join(other, "f")); err != nil {
		t.Errorf("dir was consumed despite the error: %v", err)
	}
}

// bytesLayer serves fixed bytes as Compressed, whatever they are: it stands
// in for a registry layer that is uncompressed or zstd.
type bytesLayer struct {
	compressed []byte
	diffID     v1.Hash
	mt         types.MediaType
}

func (l *bytesLayer) Digest() (v1.Hash, error) { return sha256Of(l.compressed), nil }
func (l *bytesLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *bytesLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *bytesLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("bytesLayer: use Compressed")
}
func (l *bytesLayer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *bytesLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

// sampleTar is a base-image-like layer tar: "./" prefixes, a root entry,
// whiteouts, an opaque marker, a hardlink, trailing padding.
func sampleTar(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data string) {
		h.ModTime = fixedTime
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(data))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, data); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, strings.Repeat("\x7fELF busybox ", 4000))
	add(&tar.Header{Name: "./bin/sh", Typeflag: tar.TypeLink, Linkname: "./bin/busybox", Mode: 0o755}, "")
	add(&tar.Header{Name: "./bin/ls", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, "")
	add(&tar.Header{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./etc/.wh.motd", Typeflag: tar.TypeReg}, "")
	add(&tar.Header{Name: "./etc/shadow", Typeflag: tar.TypeReg, Mode: 0o640, Gid: 42}, "root:*:19000::::::\n")
	add(&tar.Header{Name: "./var/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./var/lib/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./var/lib/.wh..wh..opq", Typeflag: tar.TypeReg}, "")
	add(&tar.Header{Name: "./var/lib/dpkg", Typeflag: tar.TypeReg}, "status")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	buf.Write(make([]byte, 8192)) // record padding, as GNU tar writes it
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// entries describes the tar r entry by entry (names normalised, contents
// hashed), as the oracle for "the unpacked fs matches the layer".
func entries(t testing.TB, r io.Reader) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if name == "" {
			continue // the root entry
		}
		link := strings.TrimPrefix(h.Linkname, "./")
		data, _ := io.ReadAll(tr)
		mode := h.Mode
		if strings.HasPrefix(filepath.Base(name), ".wh.") {
			mode = 0 // whiteouts carry no attributes
		}
		out = append(out, fmt.Sprintf("%s %c %o %d:%d %s %x", name, h.Typeflag, mode, h.Uid, h.Gid, link, sha256.Sum256(data)))
	}
	slices.Sort(out)
	return out
}

func TestPullLayer(t *testing.T) {
	requireRoot(t)
	plain := sampleTar(t)
	diffID := sha256Of(plain)
	randomLayer, err := random.Layer(64<<10, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	gzLayer, err := tarball.LayerFromReader(bytes.NewReader(gzipBytes(t, plain)), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	zstdTarball, err := tarball.LayerFromReader(bytes.NewReader(plain), tarball.WithCompression(compression.ZStd))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		layer v1.Layer
		gzip  bool // validate.Layer only understands gzip
	}{
		{"gzip tarball", gzLayer, true},
		{"random", randomLayer, true},
		{"uncompressed", &bytesLayer{compressed: plain, diffID: diffID, mt: types.DockerUncompressedLayer}, false},
		{"zstd", &bytesLayer{compressed: zstdBytes(t, plain), diffID: diffID, mt: types.OCILayerZStd}, false},
		{"zstd tarball", zstdTarball, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t)
			info, err := s.PullLayer(ctx, tc.layer)
			if err != nil {
				t.Fatalf("PullLayer: %v", err)
			}
			checkStored(t, s, info)
			wantDiffID, _ := tc.layer.DiffID()
			wantDigest, _ := tc.layer.Digest()
			wantMT, _ := tc.layer.MediaType()
			wantSize, _ := tc.layer.Size()
			if info.DiffID != wantDiffID || info.Digest != wantDigest || info.MediaType != wantMT || info.Size != wantSize {
				t.Errorf("info = %+v, want diffID %s digest %s mediaType %s size %d", info, wantDiffID, wantDigest, wantMT, wantSize)
			}

			// The unpacked fs, written back as a tar, has the layer's entries.
			var got bytes.Buffer
			if err := layer.WriteTar(ctx, info.Dir, &got); err != nil {
				t.Fatal(err)
			}
			var src io.Reader
			if _, ok := tc.layer.(*bytesLayer); ok {
				src = bytes.NewReader(plain)
			} else {
				rc, err := tc.layer.Uncompressed()
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				src = rc
			}
			if g, w := entries(t, &got), entries(t, src); !slices.Equal(g, w) {
				t.Errorf("unpacked fs differs from the layer:\n got %q\nwant %q", g, w)
			}

			stored := s.Layer(info, "")
			if tc.gzip {
				if err := validate.Layer(stored); err != nil {
					t.Errorf("validate.Layer: %v", err)
				}
			}
			rc, err := stored.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if h, _, err := v1.SHA256(rc); err != nil || h != info.DiffID {
				t.Errorf("stored Uncompressed hashes to %s (%v), want %s", h, err, info.DiffID)
			}
		})
	}
}

// forbiddenLayer fails the test if its bytes are asked for.
type forbiddenLayer struct {
	v1.Layer
	t *testing.T
}

func (l forbiddenLayer) Compressed() (io.ReadCloser, error) {
	l.t.Error("Compressed called for a layer that is already stored")
	return nil, errors.New("forbidden")
}

func (l forbiddenLayer) Uncompressed() (io.ReadCloser, error) {
	l.t.Error("Uncompressed called for a layer that is already stored")
	return nil, errors.New("forbidden")
}

func (l forbiddenLayer) Digest() (v1.Hash, error) {
	l.t.Error("Digest called for a layer that is already stored: for some layers it reads all the bytes")
	return l.Layer.Digest()
}

func TestPullLayerCached(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	l, err := random.Layer(1<<10, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	want, err := s.PullLayer(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	// A second process on the same root must find it too.
	s2, err := Open(s.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{s, s2} {
		got, err := st.PullLayer(ctx, forbiddenLayer{Layer: l, t: t})
		if err != nil || got != want {
			t.Errorf("PullLayer of a stored layer = %+v, %v; want %+v", got, err, want)
		}
	}
	// A committed layer with the same diffID counts as stored as well.
	dir, _ := s.TempDir("upper-")
	buildTree(t, dir)
	committed, _, err := s.CommitDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.PullLayer(ctx, forbiddenLayer{Layer: s.Layer(committed, types.DockerLayer), t: t})
	if err != nil || got != committed {
		t.Errorf("PullLayer of a committed layer = %+v, %v; want %+v", got, err, committed)
	}
}

// lyingLayer reports hashes that its bytes do not have.
type lyingLayer struct {
	v1.Layer
	digest, diffID *v1.Hash
}

func (l lyingLayer) Digest() (v1.Hash, error) {
	if l.digest != nil {
		return *l.digest, nil
	}
	return l.Layer.Digest()
}

func (l lyingLayer) DiffID() (v1.Hash, error) {
	if l.diffID != nil {
		return *l.diffID, nil
	}
	return l.Layer.DiffID()
}

func TestPullLayerVerifies(t *testing.T) {
	requireRoot(t)
	l, err := random.Layer(1<<10, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	bogus := sha256Of([]byte("bogus"))
	tests := []struct {
		name  string
		layer v1.Layer
		want  string
	}{
		{"digest", lyingLayer{Layer: l, digest: &bogus}, "verifying digest"},
		{"diffID", lyingLayer{Layer: l, diffID: &bogus}, "verifying diffID"},
		{"not a tar", &bytesLayer{compressed: gzipBytes(t, []byte("hello, not a tar")), diffID: bogus, mt: types.OCILayer}, "reading layer tar"},
		{"xz", &bytesLayer{compressed: []byte("\xfd7zXZ\x00\x00"), diffID: bogus, mt: types.DockerLayer}, "xz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			_, err := s.PullLayer(context.Background(), tc.layer)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("PullLayer: %v, want an error containing %q", err, tc.want)
			}
			for _, d := range []string{"layers", "blobs/sha256", "tmp"} {
				if got := names(t, filepath.Join(s.Root, d)); len(got) != 0 {
					t.Errorf("%s/ = %v after a failed pull, want nothing", d, got)
				}
			}
		})
	}
}

// TestConcurrent commits and pulls one layer from 8 goroutines at once,
// each with its own Store as separate kiln processes would have: every
// one must succeed and the store must end up with a single copy.
func TestConcurrent(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()

	// The layer to pull: the same tree, committed in another root.
	src := openStore(t)
	dir, _ := src.TempDir("upper-")
	buildTree(t, dir)
	srcInfo, _, err := src.CommitDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	remote := &countingLayer{Layer: src.Layer(srcInfo, types.DockerLayer)}

	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			remote.calls.Store(0)
			root := filepath.Join(t.TempDir(), "root")
			first, err := Open(root)
			if err != nil {
				t.Fatal(err)
			}
			// Closed before the temp dir goes: Close waits for the
			// store's background syncs.
			t.Cleanup(func() { first.Close() })
			const n = 8
			dirs := make([]string, n)
			for i := range dirs {
				if i%2 == 0 {
					dirs[i], _ = first.TempDir("upper-")
					buildTree(t, dirs[i])
				}
			}
			infos := make([]LayerInfo, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					s := first
					if !shared {
						if s, errs[i] = Open(root); errs[i] != nil {
							return
						}
						defer s.Close()
					}
					if i%2 == 0 {
						infos[i], _, errs[i] = s.CommitDir(ctx, dirs[i])
					} else {
						infos[i], errs[i] = s.PullLayer(ctx, remote)
					}
				})
			}
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Errorf("goroutine %d: %v", i, errs[i])
				} else if infos[i].DiffID != srcInfo.DiffID {
					t.Errorf("goroutine %d: diffID %s, want %s", i, infos[i].DiffID, srcInfo.DiffID)
				} else if infos[i] != infos[0] {
					t.Errorf("goroutine %d: %+v, want %+v", i, infos[i], infos[0])
				}
			}
			if got := names(t, filepath.Join(root, "layers")); len(got) != 1 {
				t.Errorf("layers/ = %v, want one copy", got)
			}
			if got := names(t, filepath.Join(root, "blobs", "sha256")); len(got) != 1 {
				t.Errorf("blobs/ = %v, want one copy", got)
			}
			checkStored(t, first, infos[0])
			// Pullers sharing a Store wait for one download.
			if calls := remote.calls.Load(); shared && calls > 1 {
				t.Errorf("layer downloaded %d times through one Store, want at most once", calls)
			}
		})
	}
}

type countingLayer struct {
	v1.Layer
	calls atomic.Int32
}

func (l *countingLayer) Compressed() (io.ReadCloser, error) {
	l.calls.Add(1)
	return l.Layer.Compressed()
}

func TestOpenClearsTmp(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	inUse, _ := s.TempDir("live-")
	// While s is open, another Open must leave its scratch alone, however
	// old it looks.
	old := time.Now().Add(-100 * 24 * time.Hour)
	os.Chtimes(inUse, old, old)
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(inUse); err != nil {
		t.Errorf("scratch of a live store removed: %v", err)
	}
	// Once no store is open, leftovers are garbage.
	s.Close()
	s2.Close()
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(inUse); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover %s kept after its store closed: %v", inUse, err)
	}
}

func TestTempDir(t *testing.T) {
	s := openStore(t)
	dir, err := s.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != filepath.Join(s.Root, "tmp") || !strings.HasPrefix(filepath.Base(dir), "upper-") {
		t.Errorf("TempDir = %s, want ROOT/tmp/upper-*", dir)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("TempDir mode %v (%v), want 0755", fi.Mode(), err)
	}
}

func TestLayerByDiffIDMissing(t *testing.T) {
	s := openStore(t)
	_, ok, err := s.LayerByDiffID(sha256Of([]byte("nothing")))
	if ok || err != nil {
		t.Errorf("LayerByDiffID of a missing layer = %v, %v; want false, nil", ok, err)
	}
	if _, _, err := s.LayerByDiffID(v1.Hash{Algorithm: "sha512", Hex: "00"}); err == nil {
		t.Error("LayerByDiffID accepted a sha512 hash")
	}
}

// benchTrees are the fixtures of the benchmarks: many small files (walk
// and per-file cost) and one big file (compression throughput).
var benchTrees = []struct {
	name  string
	build func(testing.TB, string)
	size  int64 // bytes of file content, roughly
}{
	{"10k-small", func(t testing.TB, dir string) {
		for i := range 10000 {
			d := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
			if i%100 == 0 {
				os.Mkdir(d, 0o755)
			}
			data := strings.Repeat(fmt.Sprintf("line %d of a small file\n", i), 40)
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d", i)), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}, 10000 * 1000},
	{"256MiB-text", bigFile(textish), 256 << 20},
	{"256MiB-random", bigFile(randomBytes), 256 << 20},
}

// textish writes word soup from a small vocabulary, which compresses about
// like the binaries and text of real layers do (~3x).
func textish(w io.Writer, n int64) {
	words := strings.Fields("the of and to in is for on that by this with from layer image file build run copy kiln overlay tar gzip zstd cache step 0 1 2 42 1024 0x7f ELF lib usr bin share")
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 0, 1<<20)
	for n > 0 {
		buf = buf[:0]
		for len(buf) < cap(buf)-16 {
			buf = append(buf, words[rng.IntN(len(words))]...)
			buf = append(buf, " \n\t"[rng.IntN(3)])
		}
		if int64(len(buf)) > n {
			buf = buf[:n]
		}
		w.Write(buf)
		n -= int64(len(buf))
	}
}

func randomBytes(w io.Writer, n int64) {
	io.CopyN(w, rand.NewChaCha8([32]byte{}), n)
}

func bigFile(fill func(io.Writer, int64)) func(testing.TB, string) {
	return func(t testing.TB, dir string) {
		f, err := os.Create(filepath.Join(dir, "big"))
		if err != nil {
			t.Fatal(err)
		}
		fill(f, 256<<20)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// commitTrees add the commits at the ends of the scale: a step that
// changed nothing, one that wrote a small file (most RUN steps), and a
// 100 MiB layer.
var commitTrees = append([]struct {
	name  string
	build func(testing.TB, string)
	size  int64
}{
	{"empty", func(testing.TB, string) {}, 0},
	{"1-small", func(t testing.TB, dir string) {
		if err := os.WriteFile(filepath.Join(dir, "step1"), []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}, 2},
	{"100MiB-text", bigFile(textish), 100 << 20},
}, benchTrees...)

// BenchmarkCommitDir measures a RUN step's commit: tar, gzip, hashes,
// blob write and making the dirty upper dir durable.
func BenchmarkCommitDir(b *testing.B) {
	requireRoot(b)
	for _, bc := range commitTrees {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(bc.size)
			for b.Loop() {
				b.StopTimer()
				root := b.TempDir()
				s, err := Open(root)
				if err != nil {
					b.Fatal(err)
				}
				dir, _ := s.TempDir("upper-")
				bc.build(b, dir)
				// No sync here: like a step's upper dir, the fixture is
				// dirty, and making it durable is part of committing.
				b.StartTimer()
				if _, _, err := s.CommitDir(context.Background(), dir); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(root)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkPullLayer measures pulling a gzip layer that is already local
// (as if the network were free): gunzip, unpack, hashes, blob write, sync.
func BenchmarkPullLayer(b *testing.B) {
	requireRoot(b)
	for _, bc := range benchTrees {
		b.Run(bc.name, func(b *testing.B) {
			src, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			dir, _ := src.TempDir("upper-")
			bc.build(b, dir)
			info, _, err := src.CommitDir(context.Background(), dir)
			if err != nil {
				b.Fatal(err)
			}
			l := src.Layer(info, "")
			b.SetBytes(bc.size)
			for b.Loop() {
				b.StopTimer()
				root := b.TempDir()
				s, err := Open(root)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := s.PullLayer(context.Background(), l); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(root)
				b.StartTimer()
			}
		})
	}
}

// TestCommitDirNewRoot: the layer is a new directory with the committed
// directory's entries and its owner, times and extended attributes, not
// the directory itself (a RUN step's upper dir stays in
// use by its overlay until the kernel has torn the sandbox down).
func TestCommitDirNewRoot(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	dir, err := s.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	buildTree(t, dir)
	if err := os.Chown(dir, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1751); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(dir, "trusted.kiln-test", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1_500_000_000, 123)
	if err := os.Chtimes(dir, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	var before unix.Stat_t
	if err := unix.Lstat(dir, &before); err != nil {
		t.Fatal(err)
	}
	info, _, err := s.CommitDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(info.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Ino == before.Ino {
		t.Error("the layer is the committed directory itself")
	}
	// The mode is the usual one a layer root gets when published.
	if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o7777 != 0o755 || st.Mtim != before.Mtim {
		t.Errorf("layer root: uid %d gid %d mode %o mtime %v, want 1234 5678 755 %v", st.Uid, st.Gid, st.Mode&0o7777, st.Mtim, before.Mtim)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(info.Dir, "trusted.kiln-test", buf); err != nil || string(buf[:n]) != "x" {
		t.Errorf("layer root xattr: %q, %v", buf[:max(n, 0)], err)
	}
	checkStored(t, s, info)
}
