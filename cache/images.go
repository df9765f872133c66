package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/ctxio"
)

// Named images live beside the blobs they are made of:
//
//	ROOT/images/<sha256 of the name>.json   {name, digest, created}
//
// The manifest and config are blobs like the layers, so an image is
// complete once its record exists: blobs are stored (and synced) first, the
// record appears last by rename. One file per name makes tagging and
// untagging a single atomic rename or unlink, with no index to rewrite
// under a lock.

// ErrImageNotFound is returned (wrapped) when a name has no image.
var ErrImageNotFound = errors.New("no such image")

// ImageEntry is one name in the store.
type ImageEntry struct {
	// Name is normalised: docker.io/library/app:latest.
	Name string
	// Digest is the manifest digest.
	Digest v1.Hash
	// ID is the config digest, what docker calls the image ID.
	ID v1.Hash
	// Size is the sum of the compressed layers, config and manifest.
	Size int64
	// Created is when the name was last given to an image.
	Created time.Time
}

// imageRecord is the on-disk form of a name.
type imageRecord struct {
	Name    string    `json:"name"`
	Digest  v1.Hash   `json:"digest"`
	Created time.Time `json:"created"`
}

func (s *Store) imagesDir() string { return filepath.Join(s.Root, "images") }

func (s *Store) imagePath(normalised string) string {
	h := sha256.Sum256([]byte(normalised))
	return filepath.Join(s.imagesDir(), hex.EncodeToString(h[:])+".json")
}

// NormalizeImageName spells a tag the way docker does, so that `app`,
// `app:latest` and `docker.io/library/app:latest` are one name:
// a missing tag becomes latest, a Docker Hub name gains docker.io/ and
// library/. Digest references are refused: a name is something a build can
// move.
func NormalizeImageName(n string) (string, error) {
	if strings.Contains(n, "@") {
		return "", fmt.Errorf("image name %q: a digest cannot name an image; use a tag", n)
	}
	t, err := name.NewTag(n)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w", n, err)
	}
	return fullName(t.Context(), ":"+t.TagStr()), nil
}

// fullName writes docker.io rather than go-containerregistry's
// index.docker.io, as docker, containerd and BuildKit do.
func fullName(repo name.Repository, suffix string) string {
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + repo.RepositoryStr() + suffix
}

// FamiliarImageName is the short spelling docker shows: busybox:latest for
// docker.io/library/busybox:latest. n must be normalised.
func FamiliarImageName(n string) string {
	if rest, ok := strings.CutPrefix(n, "docker.io/"); ok {
		return strings.TrimPrefix(rest, "library/")
	}
	return n
}

// PutImage records img under names, replacing whatever they named before.
// Its blobs are stored first: the layers of an image kiln built are already
// in the store and cost a stat each; any other layer (from `kiln load`) is
// stored and unpacked with PullLayer, so that the image can be a base.
// A name is written only once the whole image is durable.
func (s *Store) PutImage(ctx context.Context, names []string, img v1.Image) error {
	if len(names) == 0 {
		return errors.New("storing image: no name given")
	}
	normalised := make([]string, 0, len(names))
	for _, n := range names {
		nn, err := NormalizeImageName(n)
		if err != nil {
			return fmt.Errorf("storing image: %w", err)
		}
		normalised = append(normalised, nn)
	}
	digest, err := s.putImageBlobs(ctx, img)
	if err != nil {
		return fmt.Errorf("storing image %s: %w", normalised[0], err)
	}
	if err := os.MkdirAll(s.imagesDir(), 0o755); err != nil {
		return fmt.Errorf("storing image %s: %w", normalised[0], err)
	}
	now := time.Now().UTC()
	for _, n := range normalised {
		// A rebuild that changed nothing names the same image again: two
		// fsyncs saved on every no-op build with -t.
		if rec, err := s.readImageRecord(s.imagePath(n)); err == nil && rec.Digest == digest && rec.Name == n {
			continue
		}
		data, err := json.Marshal(imageRecord{Name: n, Digest: digest, Created: now})
		if err != nil {
			return fmt.Errorf("naming image %s: %w", n, err)
		}
		if err := s.writeAtomic(s.imagePath(n), append(data, '\n')); err != nil {
			return fmt.Errorf("naming image %s: %w", n, err)
		}
	}
	return nil
}

// putImageBlobs stores every blob of img and returns its manifest digest.
func (s *Store) putImageBlobs(ctx context.Context, img v1.Image) (v1.Hash, error) {
	mt, err := img.MediaType()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reading media type: %w", err)
	}
	if mt.IsIndex() {
		return v1.Hash{}, fmt.Errorf("an image index (%s) is not an image", mt)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reading manifest: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("reading config: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("parsing manifest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("listing layers: %w", err)
	}
	for _, l := range layers {
		if err := s.putImageLayer(ctx, l); err != nil {
			return v1.Hash{}, err
		}
	}
	if _, err := s.putBytesBlob(m.Config.Digest, rawConfig); err != nil {
		return v1.Hash{}, err
	}
	digest, _, err := v1.SHA256(bytes.NewReader(rawManifest))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("hashing manifest: %w", err)
	}
	return s.putBytesBlob(digest, rawManifest)
}

// putImageLayer makes sure l is stored both as its blob and unpacked.
func (s *Store) putImageLayer(ctx context.Context, l v1.Layer) error {
	digest, err := l.Digest()
	if err != nil {
		return fmt.Errorf("reading layer digest: %w", err)
	}
	if err := checkHash(digest); err != nil {
		return fmt.Errorf("storing layer: %w", err)
	}
	diffID, err := l.DiffID()
	if err != nil {
		return fmt.Errorf("reading layer diffID: %w", err)
	}
	if _, ok, err := s.LayerByDiffID(diffID); err != nil {
		return err
	} else if !ok {
		// PullLayer stores the blob under l's (verified) digest too.
		if _, err := s.PullLayer(ctx, l); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(s.blobPath(digest)); err == nil {
		return nil
	}
	// The same diffID is stored, but compressed differently (a loaded
	// image recompressed by another tool): keep this image's bytes too,
	// since its manifest names them.
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("reading layer %s: %w", digest, err)
	}
	defer rc.Close()
	return s.putBlob(ctx, digest, rc)
}

// putBytesBlob stores data as the blob digest, after checking that it is.
func (s *Store) putBytesBlob(digest v1.Hash, data []byte) (v1.Hash, error) {
	return digest, s.putBlob(context.Background(), digest, bytes.NewReader(data))
}

// putBlob copies r into the blob digest, verifying it, unless the store
// has it already, intact: an existing blob is re-digested (these are
// manifests, configs and the odd recompressed layer) and replaced if it
// was damaged.
func (s *Store) putBlob(ctx context.Context, digest v1.Hash, r io.Reader) error {
	if err := checkHash(digest); err != nil {
		return fmt.Errorf("storing blob: %w", err)
	}
	if got, _, err := digestFile(s.blobPath(digest)); err == nil && got == digest {
		return nil
	}
	f, err := os.CreateTemp(s.tmp(), "blob-")
	if err != nil {
		return fmt.Errorf("storing blob %s: %w", digest, err)
	}
	blob := &tempBlob{path: f.Name()}
	defer blob.discard()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxio.Reader(ctx, r))
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("storing blob %s: %w", digest, err)
	}
	blob.digest, blob.size = sum(h), n
	if blob.digest != digest {
		return fmt.Errorf("storing blob %s: content has digest %s", digest, blob.digest)
	}
	return s.storeBlob(blob)
}

// Image returns the image a name refers to, served from stored blobs: its
// layers are the stored blobs (never recompressed) and, being stored, are
// also unpacked, so PullLayer on them reads nothing. ref may also be a
// digest reference (app@sha256:…) to an image stored under some name of
// that repository.
func (s *Store) Image(ref string) (v1.Image, bool, error) {
	rec, ok, err := s.lookupImage(ref)
	if err != nil || !ok {
		return nil, ok, err
	}
	img, err := s.storedImage(rec.Digest)
	if err != nil {
		return nil, false, fmt.Errorf("reading image %s: %w", rec.Name, err)
	}
	return img, true, nil
}

func (s *Store) lookupImage(ref string) (imageRecord, bool, error) {
	if !strings.Contains(ref, "@") {
		n, err := NormalizeImageName(ref)
		if err != nil {
			return imageRecord{}, false, fmt.Errorf("looking up image: %w", err)
		}
		rec, err := s.readImageRecord(s.imagePath(n))
		if errors.Is(err, fs.ErrNotExist) {
			return imageRecord{}, false, nil
		}
		if err != nil {
			return imageRecord{}, false, fmt.Errorf("looking up image %s: %w", n, err)
		}
		return rec, true, nil
	}
	d, err := name.NewDigest(ref)
	if err != nil {
		return imageRecord{}, false, fmt.Errorf("looking up image %q: %w", ref, err)
	}
	want, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return imageRecord{}, false, fmt.Errorf("looking up image %q: %w", ref, err)
	}
	repo := fullName(d.Context(), ":")
	recs, err := s.imageRecords()
	if err != nil {
		return imageRecord{}, false, err
	}
	for _, r := range recs {
		if r.Digest == want && strings.HasPrefix(r.Name, repo) {
			return r, true, nil
		}
	}
	return imageRecord{}, false, nil
}

func (s *Store) readImageRecord(path string) (imageRecord, error) {
	var rec imageRecord
	data, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := checkHash(rec.Digest); err != nil {
		return rec, fmt.Errorf("reading %s: %w", path, err)
	}
	return rec, nil
}

// imageRecords lists every readable name, sorted; unreadable records are
// skipped with a warning.
func (s *Store) imageRecords() ([]imageRecord, error) {
	ents, err := os.ReadDir(s.imagesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	var out []imageRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		rec, err := s.readImageRecord(filepath.Join(s.imagesDir(), e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			// One damaged name must not hide the others, nor stop du,
			// prune or a FROM by digest.
			s.warnf("skipping an unreadable image record (kiln verify --repair removes it): %v", err)
			continue
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Images lists the named images, sorted by name. An image whose record or
// manifest cannot be read is left out, with a warning.
func (s *Store) Images() ([]ImageEntry, error) {
	recs, err := s.imageRecords()
	if err != nil {
		return nil, err
	}
	out := make([]ImageEntry, 0, len(recs))
	for _, r := range recs {
		m, raw, err := s.readManifest(r.Digest)
		if err != nil {
			s.warnf("skipping image %s (kiln verify tells what is wrong; kiln rmi %s removes the name): %v", FamiliarImageName(r.Name), FamiliarImageName(r.Name), err)
			continue
		}
		size := int64(len(raw)) + m.Config.Size
		for _, l := range m.Layers {
			size += l.Size
		}
		out = append(out, ImageEntry{Name: r.Name, Digest: r.Digest, ID: m.Config.Digest, Size: size, Created: r.Created})
	}
	return out, nil
}

// RemoveImage removes a name. The blobs stay until prune finds that
// nothing uses them any more, as in BuildKit's cache: another name or a
// cached step may share them.
func (s *Store) RemoveImage(ref string) error {
	n, err := NormalizeImageName(ref)
	if err != nil {
		return fmt.Errorf("removing image: %w", err)
	}
	if err := os.Remove(s.imagePath(n)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing image %s: %w", n, ErrImageNotFound)
	} else if err != nil {
		return fmt.Errorf("removing image %s: %w", n, err)
	}
	if err := syncDir(s.imagesDir()); err != nil {
		return fmt.Errorf("removing image %s: %w", n, err)
	}
	return nil
}

func (s *Store) readManifest(digest v1.Hash) (*v1.Manifest, []byte, error) {
	raw, err := s.readBlob(digest)
	if err != nil {
		return nil, nil, fmt.Errorf("reading manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing manifest %s: %w", digest, err)
	}
	return m, raw, nil
}

// readBlob reads a small blob whole and verifies it: a manifest or config
// that does not match its digest must never be served.
func (s *Store) readBlob(digest v1.Hash) ([]byte, error) {
	if err := checkHash(digest); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(s.blobPath(digest))
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", digest, err)
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(data)); got != digest {
		return nil, fmt.Errorf("reading blob %s: content has digest %s", digest, got)
	}
	return data, nil
}

// storedImage assembles the image whose manifest is the blob digest.
func (s *Store) storedImage(digest v1.Hash) (v1.Image, error) {
	m, rawManifest, err := s.readManifest(digest)
	if err != nil {
		return nil, err
	}
	rawConfig, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("parsing config %s: %w", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("manifest %s has %d layers, its config %d diffIDs", digest, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	im := &storedImage{manifest: rawManifest, config: rawConfig, mt: mt, layers: map[v1.Hash]partial.CompressedLayer{}}
	for i, d := range m.Layers {
		if _, err := os.Lstat(s.blobPath(d.Digest)); err != nil {
			return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		info := LayerInfo{DiffID: cfg.RootFS.DiffIDs[i], Digest: d.Digest, Size: d.Size, MediaType: d.MediaType}
		im.layers[d.Digest] = s.Layer(info, d.MediaType)
	}
	return partial.CompressedToImage(im)
}

type storedImage struct {
	manifest, config []byte
	mt               types.MediaType
	layers           map[v1.Hash]partial.CompressedLayer
}

func (i *storedImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *storedImage) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *storedImage) MediaType() (types.MediaType, error) { return i.mt, nil }

func (i *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s is not part of this image", h)
}
