// Package cache is kiln's on-disk store under --root: compressed blobs by
// digest, unpacked layers (overlay format) by diffID, scratch space.
//
// Layout:
//
//	ROOT/blobs/sha256/<hex>                  compressed layer blobs, immutable
//	ROOT/layers/<first 24 hex of diffID>/fs/ unpacked layer, an overlay lowerdir
//	ROOT/layers/<...>/info.json              {diffID, digest, size, mediaType}
//	ROOT/layers/<...>/contents               what fs/ held when stored (contents.go)
//	ROOT/steps/<key>.json                    step records (steps.go)
//	ROOT/images/<sha256 of name>.json        image names (images.go)
//	ROOT/cachemounts/<id hash>[-N]           RUN --mount=type=cache (cachemounts.go)
//	ROOT/debug/<build>/step-*/               states kept for kiln debug; prune
//	                                         keeps the layers they name
//	ROOT/tmp/                                scratch, on the same filesystem
//	ROOT/lock                                flocked: shared by every open Store,
//	                                         exclusive for prune and verify --repair
//
// Layer directory names are short because every lowerdir path of a RUN step
// must fit in one page of mount options.
//
// Every entry appears by rename(2) from ROOT/tmp once it is complete and
// synced, so whatever is visible is whole, and several kiln processes can
// share a root: when two produce the same entry, the first rename wins and
// the other discards its copy.
package cache

import (
	"runtime"

	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/kiln-build/kiln/layer/gzchunk"
)

// Store is an opened store root. It is safe for concurrent use, and other
// processes may use the same root at the same time.
type Store struct {
	// Root is the absolute path of the store.
	Root string
	// MaxLayerSize bounds the unpacked size of one pulled or loaded
	// layer; zero means DefaultMaxLayerSize.
	MaxLayerSize int64

	// Warn, when set, receives warnings about damaged entries that an
	// operation skipped rather than failed on (an unreadable image
	// record). It must be set before the Store is used.
	Warn func(msg string)

	// Detach, when set, is how Close hands the syncs it would wait for
	// to another process, which calls FinishDurable(root, until): kiln
	// starts a detached copy of itself so that a build does not wait for
	// the disk at its end. Unset (or failing), Close waits.
	Detach func(root string, until int64) error

	pulls   keyedLock  // one download per layer within this process
	lock    *storeLock // shared lock on ROOT/lock: this process uses the store
	durable durability // background syncs of what was published unsynced
}

// Open creates the store layout under root if needed. When no other kiln
// process has the store open, it also empties ROOT/tmp, where a killed
// build leaves its step directories behind. Liveness is told by a shared
// flock on ROOT/lock, not by the age of entries: a RUN step can set the
// mtime of its upper dir (its "/") to anything.
//
// The lock is held until Close (or the process exits), whether or not the
// Store is still reachable: what was read from the store (an image being
// pushed or saved) stays there until the command that read it calls Close,
// which it should do only once it is done with all of it.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", root, err)
	}
	s := &Store{Root: abs}
	for _, d := range []string{filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "layers"), filepath.Join(abs, "durable")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("opening store %s: %w", abs, err)
		}
	}
	if err := os.MkdirAll(s.tmp(), 0o700); err != nil {
		return nil, fmt.Errorf("opening store %s: %w", abs, err)
	}
	spreadSubdirs(s.tmp())
	s.lock, err = lockStore(filepath.Join(abs, "lock"), s.clearTmp)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", abs, err)
	}
	return s, nil
}

// Close waits for the background syncs of what this process stored (or
// hands them to another process: Detach), then releases the store's lock: from then on prune may remove anything this
// process read from the store, and the Store must not be used. It is safe
// to call more than once.
func (s *Store) Close() error {
	err := s.closeDurable()
	if cerr := s.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) warnf(format string, args ...any) {
	if s.Warn != nil {
		s.Warn(fmt.Sprintf(format, args...))
	}
}

// clearTmp is best effort: a failure to tidy up must not fail a build.
func (s *Store) clearTmp() {
	entries, err := os.ReadDir(s.tmp())
	if err != nil {
		return
	}
	for _, e := range entries {
		os.RemoveAll(filepath.Join(s.tmp(), e.Name()))
	}
}

// TempDir creates a fresh directory under ROOT/tmp, on the store's
// filesystem so that CommitDir can rename it into place. The caller removes
// it. It is mode 0755 rather than MkdirTemp's 0700 because such a directory
// often becomes an overlay upper dir or a layer root, whose mode is the mode
// of / in the container.
func (s *Store) TempDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp(s.tmp(), prefix)
	if err != nil {
		return "", fmt.Errorf("creating scratch directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("creating scratch directory: %w", err)
	}
	return dir, nil
}

// LayerInfo describes a stored layer.
type LayerInfo struct {
	DiffID v1.Hash // sha256 of the uncompressed tar
	Digest v1.Hash // sha256 of the stored blob
	// Size is the size of the stored (compressed) blob.
	Size int64
	// MediaType is that of the stored blob: gzip for the layers kiln
	// writes, whatever the registry served for pulled ones.
	MediaType types.MediaType
	// Dir is the unpacked layer in overlay format: usable as an overlay
	// lowerdir, never to be modified. Empty while Remote is set.
	Dir string
	// Remote, when set, is a layer known only by its descriptor (a remote
	// cache hit, a base layer not needed yet): its bytes are where Remote
	// reads them from, and nothing of it is in the store until Materialize
	// unpacks it through PullLayer.
	Remote v1.Layer
}

// Lazy reports whether the layer is not in the store yet.
func (l LayerInfo) Lazy() bool { return l.Remote != nil }

// Materialize unpacks the lazy layers of layers through PullLayer
// (verified like any pulled layer) and returns the list with every layer
// in the store. wrap, when set, wraps each layer before it is read (to
// show download progress). The input is not modified: other stages may
// read it concurrently.
func (s *Store) Materialize(ctx context.Context, layers []LayerInfo, wrap func(v1.Layer) v1.Layer) ([]LayerInfo, error) {
	out := append([]LayerInfo(nil), layers...)
	lazy := false
	// Layers are independent until mounted: fetch and unpack them side by
	// side (decompression and file writes keep a core busy each, the
	// download overlaps them).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0) + 1)
	for i, l := range layers {
		if !l.Lazy() {
			continue
		}
		lazy = true
		r := l.Remote
		if wrap != nil {
			r = wrap(r)
		}
		g.Go(func() error {
			info, err := s.PullLayer(gctx, r)
			if err != nil {
				return err
			}
			out[i] = info
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if !lazy {
		return layers, nil
	}
	return out, nil
}

// infoFile is the on-disk form of LayerInfo in info.json.
type infoFile struct {
	DiffID    v1.Hash         `json:"diffID"`
	Digest    v1.Hash         `json:"digest"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
	// Unsynced marks a layer published before its files were synced
	// (durable.go).
	Unsynced *unsyncedMark `json:"unsynced,omitempty"`
}

func (s *Store) tmp() string { return filepath.Join(s.Root, "tmp") }

func (s *Store) blobDir() string { return filepath.Join(s.Root, "blobs", "sha256") }

func (s *Store) blobPath(digest v1.Hash) string { return filepath.Join(s.blobDir(), digest.Hex) }

func (s *Store) layersDir() string { return filepath.Join(s.Root, "layers") }

func (s *Store) layerDir(diffID v1.Hash) string {
	return filepath.Join(s.layersDir(), diffID.Hex[:24])
}

func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return fmt.Errorf("unsupported digest %q: want sha256", h)
	}
	return nil
}

// LayerByDiffID returns the stored layer with the given diffID, if any.
func (s *Store) LayerByDiffID(diffID v1.Hash) (LayerInfo, bool, error) {
	if err := checkHash(diffID); err != nil {
		return LayerInfo{}, false, fmt.Errorf("looking up layer: %w", err)
	}
	dir := s.layerDir(diffID)
	data, err := os.ReadFile(filepath.Join(dir, "info.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return LayerInfo{}, false, nil
	}
	if err != nil {
		return LayerInfo{}, false, fmt.Errorf("looking up layer %s: %w", diffID, err)
	}
	var f infoFile
	if err := json.Unmarshal(data, &f); err != nil {
		return LayerInfo{}, false, fmt.Errorf("reading %s: %w", filepath.Join(dir, "info.json"), err)
	}
	if f.DiffID != diffID {
		// 96 bits of prefix make this a corrupted store, not a collision.
		return LayerInfo{}, false, fmt.Errorf("looking up layer %s: %s holds layer %s", diffID, dir, f.DiffID)
	}
	if s.suspect(f) {
		// Published unsynced before a reboot: maybe incomplete.
		s.dropSuspect(dir)
		return LayerInfo{}, false, nil
	}
	if _, err := os.Lstat(s.blobPath(f.Digest)); err != nil {
		// Its blob was found damaged and removed (or lost): the layer
		// counts as absent, so that the next pull or build stores the
		// blob again; publishing then keeps this directory.
		return LayerInfo{}, false, nil
	}
	return LayerInfo{
		DiffID:    f.DiffID,
		Digest:    f.Digest,
		Size:      f.Size,
		MediaType: f.MediaType,
		Dir:       filepath.Join(dir, "fs"),
	}, true, nil
}

// Layer returns a v1.Layer backed by the stored blob of info, so that
// exporting never recompresses. mt is the media type to report (an empty mt
// means info.MediaType): the same gzip bytes are an OCI or a Docker layer
// depending on the manifest they go into.
func (s *Store) Layer(info LayerInfo, mt types.MediaType) v1.Layer {
	if mt == "" {
		mt = info.MediaType
	}
	if info.Lazy() {
		if stored, ok, err := s.LayerByDiffID(info.DiffID); err == nil && ok && stored.Digest == info.Digest {
			info = stored
		} else {
			return &lazyLayer{Layer: info.Remote, mt: mt}
		}
	}
	return &storedLayer{path: s.blobPath(info.Digest), info: info, mt: mt}
}

// lazyLayer is a layer read from where it lives, under the media type
// its manifest gives it.
type lazyLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *lazyLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

type storedLayer struct {
	path string
	info LayerInfo
	mt   types.MediaType
}

func (l *storedLayer) Digest() (v1.Hash, error)            { return l.info.Digest, nil }
func (l *storedLayer) DiffID() (v1.Hash, error)            { return l.info.DiffID, nil }
func (l *storedLayer) Size() (int64, error)                { return l.info.Size, nil }
func (l *storedLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func (l *storedLayer) Compressed() (io.ReadCloser, error) {
	return l.open()
}

// open opens the blob for a read that verifies it: a stored blob is
// trusted no more than a registry's answer. A blob that does not have the
// digest it is stored under is removed when its end is read, so that
// whatever fetches or builds it next stores it again instead of finding
// it present, and the read fails with an error saying so.
func (l *storedLayer) open() (*storedBlob, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("opening layer blob %s: %w (kiln verify --repair drops what depends on it, so that the next build fetches it again)", l.info.Digest, err)
	}
	want := l.info.Digest
	v := &verifyingReader{r: f, h: sha256.New(), want: want, size: -1, onBad: func(e *LayerDigestError) error {
		os.Remove(f.Name())
		return fmt.Errorf("blob %s in the store is damaged (its content has digest %s): it was removed, so that the next build or pull fetches it again; kiln verify checks the whole store", want, e.Got)
	}}
	return &storedBlob{verifyingReader: v, f: f}, nil
}

// storedBlob is a verifying read of a file in the store.
type storedBlob struct {
	*verifyingReader
	f *os.File
}

func (b *storedBlob) Close() error { return b.f.Close() }

// VerifiesDigest is the digest the blob's bytes are checked against: a
// read that reaches the end fails unless they have it (so an export need
// not hash them again).
func (b *storedBlob) VerifiesDigest() v1.Hash { return b.want }

// CopyTo copies the whole blob to dst, a regular file, in the kernel
// (copy_file_range), while the blob is hashed from the page cache on
// another core: the check of a read, without its copy through user
// space. A blob with another digest fails as a read of it would (it is
// removed from the store); dst then holds bytes to throw away.
func (b *storedBlob) CopyTo(ctx context.Context, dst *os.File) (int64, error) {
	hashed := make(chan error, 1)
	go func() {
		h := sha256.New()
		_, err := io.CopyBuffer(h, io.NewSectionReader(b.f, 0, 1<<62), make([]byte, 1<<20))
		if err == nil {
			if got := sum(h); got != b.want {
				err = b.bad(&LayerDigestError{Want: b.want, Got: got, Size: -1})
			}
		}
		hashed <- err
	}()
	n, err := copyFileRange(ctx, dst, b.f)
	if herr := <-hashed; herr != nil {
		return n, herr
	}
	return n, err
}

func (l *storedLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	r, closeDec, err := decompress(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decompressing layer blob %s: %w", l.info.Digest, err)
	}
	return &readCloser{Reader: r, close: func() error {
		closeDec()
		return f.Close()
	}}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

var (
	gzipMagic  = []byte{0x1f, 0x8b}
	zstdMagic  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	bzip2Magic = []byte("BZh")
)

// decompress picks the decompressor by magic bytes rather than by media
// type: registries and old tools mislabel layers, the bytes do not lie.
// Anything neither gzip nor zstd is taken for a plain tar, which the tar
// reader then validates.
func decompress(br *bufio.Reader) (r io.Reader, closeFn func(), err error) {
	magic, _ := br.Peek(6) // a short peek just means a short (plain) stream
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		// kiln's own layers inflate on every core; any other gzip
		// reads exactly as klauspost's gzip.Reader reads it.
		gz, err := gzchunk.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("reading gzip header: %w", err)
		}
		return gz, func() { gz.Close() }, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("starting zstd decoder: %w", err)
		}
		return zr, zr.Close, nil
	case bytes.HasPrefix(magic, xzMagic), bytes.HasPrefix(magic, bzip2Magic):
		return nil, nil, errors.New("xz and bzip2 layers are not supported")
	}
	return br, func() {}, nil
}
