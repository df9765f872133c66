package cache

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-build/kiln/internal/ctxio"
)

// Annotations that name an image in an OCI index, as containerd's and
// BuildKit's exporters (and kiln's) write them.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// Load stores the images of an archive under the names it gives them and
// returns one entry per name. src is a docker archive (`docker save`,
// `kiln save`), an OCI archive (a tar of an OCI image layout) or an OCI
// image layout directory. An OCI index is preferred when the archive has
// both, as kiln's and BuildKit's docker archives do, because it keeps the
// manifest byte for byte: the loaded image has the digest it was saved
// with. An image without a name is refused, since the store only keeps
// named images.
func (s *Store) Load(ctx context.Context, src string) ([]ImageEntry, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", src, err)
	}
	var named []namedImage
	if st.IsDir() {
		named, err = layoutImages(src)
	} else {
		var cleanup func()
		named, cleanup, err = s.archiveImages(ctx, src)
		// The images read their blobs lazily, in PutImage below.
		defer cleanup()
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", src, err)
	}
	var out []ImageEntry
	for _, ni := range named {
		if len(ni.names) == 0 {
			return out, fmt.Errorf("loading %s: it holds an image without a name; kiln's store keeps named images only (save it with a tag)", src)
		}
		if err := s.PutImage(ctx, ni.names, ni.img); err != nil {
			return out, fmt.Errorf("loading %s: %w", src, err)
		}
		dg, err := ni.img.Digest()
		if err != nil {
			return out, fmt.Errorf("loading %s: %w", src, err)
		}
		id, err := ni.img.ConfigName()
		if err != nil {
			return out, fmt.Errorf("loading %s: %w", src, err)
		}
		for _, n := range ni.names {
			nn, _ := NormalizeImageName(n)
			out = append(out, ImageEntry{Name: nn, Digest: dg, ID: id})
		}
	}
	return out, nil
}

type namedImage struct {
	names []string
	img   v1.Image
}

// archiveImages reads a tar file. An OCI archive is unpacked into ROOT/tmp
// (just its index and blobs) for the layout reader, which wants a
// directory; a docker archive without an index is read in place.
// The returned cleanup removes that copy once the images have been stored.
func (s *Store) archiveImages(ctx context.Context, src string) (images []namedImage, cleanup func(), err error) {
	nothing := func() {}
	members, err := tarMembers(src)
	if err != nil {
		return nil, nothing, err
	}
	switch {
	case members["index.json"] && members["oci-layout"]:
		dir, err := s.TempDir("load-")
		if err != nil {
			return nil, nothing, err
		}
		cleanup := func() { os.RemoveAll(dir) }
		if err := extractLayout(ctx, src, dir); err != nil {
			cleanup()
			return nil, nothing, err
		}
		images, err := layoutImages(dir)
		if err != nil {
			cleanup()
			return nil, nothing, err
		}
		return images, cleanup, nil
	case members["manifest.json"]:
		images, err := dockerArchiveImages(src)
		return images, nothing, err
	}
	return nil, nothing, errors.New("not a docker archive (no manifest.json) nor an OCI archive (no index.json and oci-layout)")
}

func tarMembers(src string) (map[string]bool, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	out := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading archive: %w", err)
		}
		out[path.Clean(hdr.Name)] = true
	}
}

var layoutMember = regexp.MustCompile(`^(index\.json|oci-layout|blobs/[a-z0-9]+/[a-f0-9]+)$`)

// extractLayout writes the layout's files, and nothing else, under dir;
// names are matched against what a layout holds, so no entry can land
// outside dir.
func extractLayout(ctx context.Context, src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		n := path.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg || !layoutMember.MatchString(n) {
			continue
		}
		dest := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return err
		}
		out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, ctxio.Reader(ctx, tr))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("extracting %s: %w", n, err)
		}
	}
}

// layoutImages lists the images of an OCI layout with their names. Entries
// that are indexes (multi-platform) contribute their linux/amd64 image.
func layoutImages(dir string) ([]namedImage, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading OCI layout: %w", err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading OCI layout: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading index.json: %w", err)
	}
	var out []namedImage
	byDigest := map[v1.Hash]int{}
	for _, d := range im.Manifests {
		var img v1.Image
		switch {
		case d.MediaType.IsImage():
			img, err = idx.Image(d.Digest)
		case d.MediaType.IsIndex():
			img, err = platformImage(idx, d.Digest)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading image %s: %w", d.Digest, err)
		}
		dg, err := img.Digest()
		if err != nil {
			return nil, err
		}
		i, seen := byDigest[dg]
		if !seen {
			i = len(out)
			byDigest[dg] = i
			out = append(out, namedImage{img: img})
		}
		if n := annotatedName(d.Annotations); n != "" {
			out[i].names = append(out[i].names, n)
		}
	}
	return out, nil
}

// annotatedName is the full name of an index entry. The ref.name annotation
// alone is often just a tag ("latest"), which names nothing.
func annotatedName(a map[string]string) string {
	for _, n := range []string{a[annotationImageName], a[annotationRefName]} {
		if n == "" || !strings.ContainsAny(n, "/:") {
			continue
		}
		if _, err := name.NewTag(n); err == nil {
			return n
		}
	}
	return ""
}

func platformImage(parent v1.ImageIndex, digest v1.Hash) (v1.Image, error) {
	child, err := parent.ImageIndex(digest)
	if err != nil {
		return nil, err
	}
	im, err := child.IndexManifest()
	if err != nil {
		return nil, err
	}
	var images []v1.Descriptor
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == "amd64" {
			return child.Image(d.Digest)
		}
		images = append(images, d)
	}
	if len(images) == 1 {
		return child.Image(images[0].Digest)
	}
	return nil, errors.New("the index has no linux/amd64 image")
}

// dockerArchiveImages reads manifest.json of a docker archive; the tarball
// reader serves each image's files straight from the archive.
func dockerArchiveImages(src string) ([]namedImage, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(src) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("reading manifest.json: %w", err)
	}
	var out []namedImage
	for _, e := range m {
		var tag *name.Tag
		if len(e.RepoTags) > 0 {
			t, err := name.NewTag(e.RepoTags[0])
			if err != nil {
				return nil, fmt.Errorf("reading manifest.json: %w", err)
			}
			tag = &t
		} else if len(m) > 1 {
			return nil, errors.New("the archive holds several images and some have no name")
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("reading image %s: %w", e.Config, err)
		}
		out = append(out, namedImage{names: e.RepoTags, img: img})
	}
	return out, nil
}
