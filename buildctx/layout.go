package buildctx

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"regexp"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-build/kiln/rooted"
)

// Bounds on what a layout may make kiln read into memory: the same as
// kiln's defaults for registry answers.
const (
	maxManifest   = 4 << 20
	maxConfig     = 8 << 20
	maxIndexDepth = 8
)

// hexDigest is what a sha256 blob name must look like: anything else
// (a "../" or a "/" smuggled in a digest) never becomes a path.
var hexDigest = regexp.MustCompile(`^[a-f0-9]{64}$`)

// OpenLayout returns the image an oci-layout:// context names, for
// platform when the layout holds an index: by digest when src.Digest is
// set, else by src.Tag (default "latest") among index.json's
// org.opencontainers.image.ref.name annotations, else the layout's only
// image (whatever its tag), as buildx picks it. The second result names the image by its
// manifest digest. Every path is opened inside the layout through package
// rooted, blobs only from a real blobs/sha256 directory (no symlink on the
// way), and every blob is checked against its digest as it is read.
func OpenLayout(src Source, platform v1.Platform) (v1.Image, string, error) {
	l := &layout{path: src.Dir}
	img, dgst, err := l.open(src, platform)
	if err != nil {
		return nil, "", fmt.Errorf("reading OCI layout %s: %w", src.Dir, err)
	}
	return img, "oci-layout@" + dgst.String(), nil
}

// layout is an OCI layout directory. It is opened anew for every read
// rather than held open: its lazy layers may be read long after the
// build that resolved it (by an export).
type layout struct {
	path string
}

// withRoot runs f on the layout opened as a root.
func (l *layout) withRoot(f func(r *rooted.Root) error) error {
	r, err := rooted.Open(l.path)
	if err != nil {
		return fmt.Errorf("opening OCI layout %s: %w", l.path, err)
	}
	defer r.Close()
	return f(r)
}

func (l *layout) readFile(name string, limit int64) (b []byte, err error) {
	err = l.withRoot(func(r *rooted.Root) error {
		b, err = r.ReadFile(name, limit)
		return err
	})
	return b, err
}

func (l *layout) open(src Source, platform v1.Platform) (v1.Image, v1.Hash, error) {
	b, err := l.readFile("/oci-layout", 4096)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("reading oci-layout file: %w (is %s an OCI image layout, as written by -o type=oci,tar=false?)", err, l.path)
	}
	var lf struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &lf); err != nil || lf.Version == "" {
		return nil, v1.Hash{}, errors.New("the oci-layout file is not JSON with an imageLayoutVersion; point oci-layout:// at an OCI image layout directory")
	}
	var desc v1.Descriptor
	if src.Digest != "" {
		h, err := v1.NewHash(src.Digest)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		// The media type comes from the blob itself.
		desc = v1.Descriptor{Digest: h}
	} else {
		raw, err := l.readFile("/index.json", maxManifest)
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("reading index.json: %w", err)
		}
		var idx v1.IndexManifest
		if err := json.Unmarshal(raw, &idx); err != nil {
			return nil, v1.Hash{}, fmt.Errorf("decoding index.json: %w", err)
		}
		tag := src.Tag
		if tag == "" {
			tag = "latest"
		}
		found := false
		for _, m := range idx.Manifests {
			if m.Annotations[ocispec.AnnotationRefName] == tag {
				desc, found = m, true
				break
			}
		}
		// buildx's rule: a layout of one image needs no (right) tag
		if !found && len(idx.Manifests) == 1 {
			desc, found = idx.Manifests[0], true
		}
		if !found {
			return nil, v1.Hash{}, fmt.Errorf("no image tagged %q in index.json (%d entries); name one with oci-layout://PATH:TAG or PATH@sha256:DIGEST", tag, len(idx.Manifests))
		}
	}
	return l.resolve(desc, platform, 0)
}

// resolve follows indexes down to the manifest for platform.
func (l *layout) resolve(desc v1.Descriptor, platform v1.Platform, depth int) (v1.Image, v1.Hash, error) {
	if depth > maxIndexDepth {
		return nil, v1.Hash{}, fmt.Errorf("image indexes nested deeper than %d", maxIndexDepth)
	}
	raw, err := l.readBlob(desc.Digest, maxManifest)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, v1.Hash{}, fmt.Errorf("decoding %s: %w", desc.Digest, err)
	}
	mt := probe.MediaType
	if mt == "" {
		mt = desc.MediaType
	}
	isIndex := mt.IsIndex() || (mt == "" && probe.Manifests != nil)
	if !isIndex {
		if !mt.IsImage() && !(mt == "" && probe.Config != nil) {
			return nil, v1.Hash{}, fmt.Errorf("%s is a %q, not an image manifest or index", desc.Digest, mt)
		}
		img, err := l.image(raw, mt)
		return img, desc.Digest, err
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, v1.Hash{}, fmt.Errorf("decoding index %s: %w", desc.Digest, err)
	}
	want := ocispec.Platform{OS: platform.OS, Architecture: platform.Architecture, Variant: platform.Variant}
	match := platforms.Only(want)
	best := -1
	for i, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		// attestation manifests carry an unknown/unknown platform
		p := ocispec.Platform{OS: m.Platform.OS, Architecture: m.Platform.Architecture, Variant: m.Platform.Variant}
		if !match.Match(p) {
			continue
		}
		if best < 0 || match.Less(p, toOCI(idx.Manifests[best].Platform)) {
			best = i
		}
	}
	if best < 0 {
		return nil, v1.Hash{}, fmt.Errorf("index %s has no image for %s", desc.Digest, platforms.Format(want))
	}
	return l.resolve(idx.Manifests[best], platform, depth+1)
}

func toOCI(p *v1.Platform) ocispec.Platform {
	return ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// image builds a lazy v1.Image of a manifest: its config is read (and
// verified) now, its layers when a step needs them.
func (l *layout) image(raw []byte, mt types.MediaType) (v1.Image, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decoding manifest: %w", err)
	}
	cfg, err := l.readBlob(m.Config.Digest, maxConfig)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(cfg, &cf); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("the manifest has %d layers and its config %d diff_ids", len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	layers := map[v1.Hash]layoutLayer{}
	for i, d := range m.Layers {
		if _, err := blobName(d.Digest); err != nil {
			return nil, err
		}
		layers[d.Digest] = layoutLayer{l: l, desc: d, diffID: cf.RootFS.DiffIDs[i]}
	}
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	return partial.CompressedToImage(&layoutImage{l: l, raw: raw, cfg: cfg, mt: mt, layers: layers})
}

type layoutImage struct {
	l      *layout
	raw    []byte
	cfg    []byte
	mt     types.MediaType
	layers map[v1.Hash]layoutLayer
}

func (i *layoutImage) RawConfigFile() ([]byte, error)      { return i.cfg, nil }
func (i *layoutImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *layoutImage) RawManifest() ([]byte, error)        { return i.raw, nil }

func (i *layoutImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	l, ok := i.layers[h]
	if !ok {
		return nil, fmt.Errorf("layer %s is not in the manifest", h)
	}
	return &l, nil
}

// layoutLayer is a layer blob of the layout. Its diffID is the config's
// (the store checks it while unpacking): without it, asking for the
// diffID would decompress the whole blob on every build.
type layoutLayer struct {
	l      *layout
	desc   v1.Descriptor
	diffID v1.Hash
}

func (l *layoutLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

func (l *layoutLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *layoutLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *layoutLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

// Compressed streams the blob, failing at its end if the bytes do not
// have the descriptor's digest and size.
func (l *layoutLayer) Compressed() (io.ReadCloser, error) {
	f, err := l.l.openBlob(l.desc.Digest)
	if err != nil {
		return nil, err
	}
	return &verifier{f: f, h: sha256.New(), want: l.desc.Digest, size: l.desc.Size}, nil
}

// blobName is the file name of a sha256 digest under blobs/sha256.
func blobName(h v1.Hash) (string, error) {
	if h.Algorithm != "sha256" || !hexDigest.MatchString(h.Hex) {
		return "", fmt.Errorf("digest %q: only sha256 blobs are read from an OCI layout", h.String())
	}
	return h.Hex, nil
}

// openBlob opens blobs/sha256/HEX: every directory on the way must be a
// real directory inside the layout and the blob a regular file, so a
// symlinked blobs dir or blob cannot make kiln read a host file.
func (l *layout) openBlob(h v1.Hash) (*os.File, error) {
	n, err := blobName(h)
	if err != nil {
		return nil, err
	}
	var f *os.File
	err = l.withRoot(func(r *rooted.Root) error {
		d, err := r.OpenDir("/blobs/sha256")
		if err != nil {
			return fmt.Errorf("opening blobs/sha256 (it must be a directory, not a symlink): %w", err)
		}
		defer d.Close()
		if f, err = d.OpenRegular(n); err != nil {
			return fmt.Errorf("opening blob %s: %w", h, err)
		}
		return nil
	})
	return f, err
}

// readBlob reads a small blob whole and checks its digest.
func (l *layout) readBlob(h v1.Hash, limit int64) ([]byte, error) {
	f, err := l.openBlob(h)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", h, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("blob %s is larger than %d bytes", h, limit)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != h.Hex {
		return nil, fmt.Errorf("blob %s has digest sha256:%s: the layout is damaged or was tampered with", h, got)
	}
	return b, nil
}

// ErrDigestMismatch is a layer blob whose bytes do not match its digest.
var ErrDigestMismatch = errors.New("digest mismatch")

type verifier struct {
	f    *os.File
	h    hash.Hash
	n    int64
	want v1.Hash
	size int64
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.f.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size > 0 && v.n > v.size {
		return n, fmt.Errorf("layer blob %s: longer than its %d bytes: %w", v.want, v.size, ErrDigestMismatch)
	}
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Hex {
			return n, fmt.Errorf("layer blob %s has digest sha256:%s (the layout is damaged or was tampered with): %w", v.want, got, ErrDigestMismatch)
		}
		if v.size > 0 && v.n != v.size {
			return n, fmt.Errorf("layer blob %s: %d bytes, the manifest says %d: %w", v.want, v.n, v.size, ErrDigestMismatch)
		}
	}
	return n, err
}

func (v *verifier) Close() error { return v.f.Close() }
