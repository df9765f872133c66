package progress

import (
	"context"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// WatchLayer returns l reporting the download of its compressed bytes
// as a transfer of step s, named by its short digest. Layers stay lazy:
// nothing is read until the store asks for l.Compressed(), and a layer
// the store already has shows nothing.
func WatchLayer(s Step, l v1.Layer) v1.Layer {
	if _, ok := s.(Transferrer); !ok {
		return l
	}
	return &watchedLayer{Layer: l, s: s}
}

type watchedLayer struct {
	v1.Layer
	s Step
}

func (l *watchedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	id := "layer"
	if d, err := l.Layer.Digest(); err == nil {
		id = ShortDigest(d)
	}
	size, _ := l.Layer.Size() // 0, "unknown", when the registry did not say
	watched := &readCloser{Reader: NewReader(l.s, id, rc, size), Closer: rc}
	if fb, ok := rc.(fileBlob); ok {
		// Keep what the store's blob can do beyond a read: an export
		// copies it in the kernel and need not hash it again.
		return &watchedFileBlob{readCloser: watched, fb: fb, t: l.s.(Transferrer), id: id, total: size}, nil
	}
	return watched, nil
}

// fileBlob is a store blob's way of being copied whole into a file
// (cache's storedBlob; export uses it).
type fileBlob interface {
	VerifiesDigest() v1.Hash
	CopyTo(ctx context.Context, dst *os.File) (int64, error)
}

// watchedFileBlob is a watched read of a fileBlob that is still one.
type watchedFileBlob struct {
	*readCloser
	fb    fileBlob
	t     Transferrer
	id    string
	total int64
}

func (w *watchedFileBlob) VerifiesDigest() v1.Hash { return w.fb.VerifiesDigest() }

func (w *watchedFileBlob) CopyTo(ctx context.Context, dst *os.File) (int64, error) {
	n, err := w.fb.CopyTo(ctx, dst)
	w.t.Transfer(w.id, n, w.total)
	return n, err
}

type readCloser struct {
	io.Reader
	io.Closer
}

// ShortDigest is "sha256:" and 12 hex digits, as BuildKit shows layers.
func ShortDigest(h v1.Hash) string {
	hex := h.Hex
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return h.Algorithm + ":" + hex
}

// NewWriter reports the bytes written to w as transfer id of step s,
// whose size is total (0 when unknown): for pushes and exports.
func NewWriter(s Step, id string, w io.Writer, total int64) io.Writer {
	t, ok := s.(Transferrer)
	if !ok {
		return w
	}
	t.Transfer(id, 0, total)
	return &countingWriter{w: w, t: t, id: id, total: total}
}

type countingWriter struct {
	w        io.Writer
	t        Transferrer
	id       string
	n, total int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	if n > 0 {
		c.t.Transfer(c.id, c.n, c.total)
	}
	return n, err
}

// WatchImage returns img whose layers report the reading of their
// compressed bytes as transfers of step s: an export or a push of img
// then shows bytes done / total without knowing about progress.
func WatchImage(s Step, img v1.Image) v1.Image {
	if _, ok := s.(Transferrer); !ok {
		return img
	}
	return &watchedImage{Image: img, s: s}
}

type watchedImage struct {
	v1.Image
	s Step
}

func (w *watchedImage) Layers() ([]v1.Layer, error) {
	ls, err := w.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = WatchLayer(w.s, l)
	}
	return out, nil
}

func (w *watchedImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := w.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return WatchLayer(w.s, l), nil
}

func (w *watchedImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	l, err := w.Image.LayerByDiffID(h)
	if err != nil {
		return nil, err
	}
	return WatchLayer(w.s, l), nil
}
