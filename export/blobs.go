package export

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/ctxio"
)

// blob is one content-addressed file of an image: its manifest, its config
// or one of its layers (still compressed).
type blob struct {
	digest v1.Hash
	size   int64
	// open returns the blob's bytes; a layer is opened only when it is
	// written, so exporting never holds a layer in memory.
	open func() (io.ReadCloser, error)
}

// layoutPath is where a blob lives in an OCI layout: blobs/ALG/HEX.
func (b blob) layoutPath() string {
	return path.Join("blobs", b.digest.Algorithm, b.digest.Hex)
}

// imageBlobs lists every blob img is made of, once each, sorted by digest,
// with the descriptor that names the image in an index.
func imageBlobs(img v1.Image) (v1.Descriptor, []blob, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("reading manifest: %w", err)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("parsing manifest: %w", err)
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("reading manifest media type: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("reading config: %w", err)
	}

	desc := v1.Descriptor{
		MediaType: mediaType,
		Size:      int64(len(rawManifest)),
		Digest:    v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(rawManifest))},
	}
	blobs := []blob{
		bytesBlob(desc.Digest, rawManifest),
		bytesBlob(manifest.Config.Digest, rawConfig),
	}
	for _, l := range manifest.Layers {
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return v1.Descriptor{}, nil, fmt.Errorf("finding layer %s: %w", l.Digest, err)
		}
		blobs = append(blobs, blob{
			digest: l.Digest,
			size:   l.Size,
			// Compressed, never Uncompressed: the exported layer must be
			// the very blob the manifest names, and compressing again
			// would cost more than the whole rest of the export.
			open: layer.Compressed,
		})
	}
	slices.SortFunc(blobs, func(a, b blob) int { return strings.Compare(a.digest.String(), b.digest.String()) })
	// The same layer may appear twice in one image (two identical RUN
	// results); a layout holds it once.
	blobs = slices.CompactFunc(blobs, func(a, b blob) bool { return a.digest == b.digest })
	return desc, blobs, nil
}

// artifactBlobs is imageBlobs for an image or an index of images (an
// image with its attestations): the index's own manifest, then every
// child's blobs, once each, sorted by digest.
func artifactBlobs(a Artifact) (v1.Descriptor, []blob, error) {
	switch a := a.(type) {
	case v1.Image:
		return imageBlobs(a)
	case v1.ImageIndex:
		raw, err := a.RawManifest()
		if err != nil {
			return v1.Descriptor{}, nil, fmt.Errorf("reading index: %w", err)
		}
		im, err := a.IndexManifest()
		if err != nil {
			return v1.Descriptor{}, nil, fmt.Errorf("parsing index: %w", err)
		}
		mt, err := a.MediaType()
		if err != nil {
			return v1.Descriptor{}, nil, fmt.Errorf("reading index media type: %w", err)
		}
		desc := v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: sha256Hash(raw)}
		blobs := []blob{bytesBlob(desc.Digest, raw)}
		for _, m := range im.Manifests {
			img, err := a.Image(m.Digest)
			if err != nil {
				return v1.Descriptor{}, nil, fmt.Errorf("finding manifest %s: %w", m.Digest, err)
			}
			_, bs, err := imageBlobs(img)
			if err != nil {
				return v1.Descriptor{}, nil, err
			}
			blobs = append(blobs, bs...)
		}
		slices.SortFunc(blobs, func(a, b blob) int { return strings.Compare(a.digest.String(), b.digest.String()) })
		blobs = slices.CompactFunc(blobs, func(a, b blob) bool { return a.digest == b.digest })
		return desc, blobs, nil
	default:
		return v1.Descriptor{}, nil, fmt.Errorf("exporting: %T is neither an image nor an index", a)
	}
}

func bytesBlob(d v1.Hash, b []byte) blob {
	return blob{digest: d, size: int64(len(b)), open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

// copyBlob writes b to w and checks on the way that the bytes are the
// ones its digest and size promise, so a corrupt cache or a truncated
// download never becomes a plausible-looking export.
func copyBlob(ctx context.Context, w io.Writer, b blob) error {
	rc, err := b.open()
	if err != nil {
		return fmt.Errorf("opening blob %s: %w", b.digest, err)
	}
	defer rc.Close()
	return copyBlobFrom(ctx, w, b, rc)
}

// copyBlobFrom is copyBlob from the already opened rc.
func copyBlobFrom(ctx context.Context, w io.Writer, b blob, rc io.ReadCloser) error {
	var err error
	var h hash.Hash
	if v, ok := rc.(digestVerifier); !ok || v.VerifiesDigest() != b.digest {
		if h, err = newHasher(b.digest.Algorithm); err != nil {
			return err
		}
	}
	dst := w
	if h != nil {
		dst = io.MultiWriter(w, h)
	}
	// A buffer no larger than the blob: an image's config and small layers
	// are a few hundred bytes, and a MiB allocated (and zeroed) for each
	// made a 30-layer export mostly garbage collection.
	n, err := io.CopyBuffer(dst, ctxio.Reader(ctx, rc), make([]byte, min(max(b.size+1, 4<<10), 1<<20)))
	if err != nil {
		return fmt.Errorf("copying blob %s: %w", b.digest, err)
	}
	if n != b.size {
		return fmt.Errorf("copying blob %s: got %d bytes, manifest says %d", b.digest, n, b.size)
	}
	if h != nil {
		if got := fmt.Sprintf("%x", h.Sum(nil)); got != b.digest.Hex {
			return fmt.Errorf("copying blob %s: content has digest %s:%s", b.digest, b.digest.Algorithm, got)
		}
	}
	return rc.Close()
}

// fileCopier is a blob that can copy itself whole into a file in the
// kernel, checking its digest on the way (the store's blobs).
type fileCopier interface {
	digestVerifier
	CopyTo(ctx context.Context, dst *os.File) (int64, error)
}

// copyBlobInKernel writes the tar entry hdr of b to the archive w is
// writing, with b's bytes copied file to file by the kernel rather than
// through tw: a 500 MB layer is then one copy_file_range, hashed
// alongside. It reports false, having written nothing, when w is not a
// file or rc (b, opened) not such a blob; tw must be between entries.
func copyBlobInKernel(ctx context.Context, w io.Writer, tw *tar.Writer, hdr *tar.Header, b blob, rc io.ReadCloser) (bool, error) {
	fw, ok := w.(*fileWriter)
	if !ok || b.size < 1<<20 { // small blobs: not worth the syscalls
		return false, nil
	}
	fc, ok := rc.(fileCopier)
	if !ok || fc.VerifiesDigest() != b.digest {
		return false, nil
	}
	// The header as tar.Writer writes it, then the bytes, then the
	// padding to a whole block, the same archive bytes as through tw.
	var head bytes.Buffer
	if err := tar.NewWriter(&head).WriteHeader(hdr); err != nil {
		return true, err
	}
	if err := tw.Flush(); err != nil {
		return true, err
	}
	if _, err := fw.Write(head.Bytes()); err != nil {
		return true, err
	}
	if err := fw.Flush(); err != nil {
		return true, err
	}
	n, err := fc.CopyTo(ctx, fw.f)
	if err != nil {
		return true, fmt.Errorf("copying blob %s: %w", b.digest, err)
	}
	if n != b.size {
		return true, fmt.Errorf("copying blob %s: got %d bytes, manifest says %d", b.digest, n, b.size)
	}
	if pad := (512 - n%512) % 512; pad > 0 {
		if _, err := fw.Write(make([]byte, pad)); err != nil {
			return true, err
		}
	}
	return true, nil
}

// digestVerifier is a blob reader that checks the bytes it returns
// against a digest itself (the store's blobs): a read that reaches the
// end fails unless they have it. copyBlob does not hash such a blob a
// second time.
type digestVerifier interface {
	VerifiesDigest() v1.Hash
}

func newHasher(alg string) (hash.Hash, error) {
	if alg != "sha256" {
		return nil, fmt.Errorf("verifying blob: unsupported digest algorithm %q", alg)
	}
	return sha256.New(), nil
}
