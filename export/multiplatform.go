package export

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PlatformImage is one platform's image of a multi-platform build.
type PlatformImage struct {
	Platform v1.Platform
	// Dir names the platform's directory in local and tar outputs
	// ("linux_arm64"), as buildx does.
	Dir   string
	Image v1.Image
	// Attest, when set, attaches attestations to this platform's image
	// (one attestation manifest per platform, as buildx writes them).
	Attest Attester
}

// CheckMultiPlatform refuses an output that cannot hold several
// platforms' images.
func CheckMultiPlatform(out Output) error {
	if out.Type == "docker" {
		return errors.New("type=docker cannot hold several platforms (docker load takes one image per name): build one with --platform, or use type=oci or a push for all of them")
	}
	return nil
}

// WriteMulti exports several platforms' images to out: an image index
// (registry, oci) whose entries carry their platform, or one directory per
// platform (local; inside the tar for tar). names are the build's -t names;
// an output's own name= replaces them.
func WriteMulti(ctx context.Context, imgs []PlatformImage, out Output, names []string) error {
	if err := CheckMultiPlatform(out); err != nil {
		return err
	}
	if n, ok := out.Attrs["name"]; ok {
		names = nil
		for _, s := range strings.Split(n, ",") {
			if s = strings.TrimSpace(s); s != "" {
				names = append(names, s)
			}
		}
	}
	switch out.Type {
	case "oci":
		idx, err := MultiPlatformIndex(imgs, names, true)
		if err != nil {
			return err
		}
		if out.Tar {
			return OCIIndexArchive(ctx, idx, out.Dest, names)
		}
		return OCIIndexLayout(ctx, idx, out.Dest, names)
	case "registry":
		p := out.Pusher
		if p == nil {
			p = DefaultPusher
		}
		if p == nil {
			return errors.New("pushing: no registry configuration was given to the exporter")
		}
		if len(names) == 0 {
			return errors.New("pushing: no name to push to (give -t NAME or name=NAME)")
		}
		oci := true
		if v, ok := out.Attrs["oci-mediatypes"]; ok {
			oci, _ = strconv.ParseBool(v) // checked by ParseOutputs
		}
		idx, err := MultiPlatformIndex(imgs, names, oci)
		if err != nil {
			return err
		}
		return p.Push(ctx, idx, names)
	case "local":
		for _, pi := range imgs {
			if err := Local(ctx, pi.Image, filepath.Join(out.Dest, pi.Dir)); err != nil {
				return err
			}
		}
		return nil
	case "tar":
		return multiRootfsTar(ctx, imgs, out.Dest)
	default:
		return fmt.Errorf("writing output: unknown type %q", out.Type)
	}
}

// MultiPlatformIndex is the index of a multi-platform build: each
// platform's manifest with its platform, then each one's attestation
// manifest (when it has an Attester), as BuildKit lays them out. With oci
// false, Docker media types (a manifest list).
func MultiPlatformIndex(imgs []PlatformImage, names []string, oci bool) (v1.ImageIndex, error) {
	var descs, attDescs []v1.Descriptor
	children := map[v1.Hash]v1.Image{}
	for _, pi := range imgs {
		img := pi.Image
		if !oci {
			var err error
			if img, err = DockerMediaTypes(img); err != nil {
				return nil, err
			}
		}
		desc, err := partial.Descriptor(img)
		if err != nil {
			return nil, fmt.Errorf("describing the %s image: %w", pi.Dir, err)
		}
		p := pi.Platform
		d := v1.Descriptor{MediaType: desc.MediaType, Size: desc.Size, Digest: desc.Digest, Platform: &p}
		descs = append(descs, d)
		children[d.Digest] = img
		if pi.Attest == nil {
			continue
		}
		atts, err := pi.Attest(d, names)
		if err != nil {
			return nil, err
		}
		if len(atts) == 0 {
			continue
		}
		// WithAttestations lays out one image with its attestation:
		// its second entry is the attestation manifest.
		one, err := WithAttestations(img, atts, oci)
		if err != nil {
			return nil, err
		}
		im, err := one.IndexManifest()
		if err != nil {
			return nil, err
		}
		ad := im.Manifests[1]
		att, err := one.Image(ad.Digest)
		if err != nil {
			return nil, err
		}
		attDescs = append(attDescs, ad)
		children[ad.Digest] = att
	}
	mt := types.OCIImageIndex
	if !oci {
		mt = types.DockerManifestList
	}
	raw, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     mt,
		Manifests:     append(descs, attDescs...),
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the index: %w", err)
	}
	return &attestedIndex{raw: raw, mt: mt, images: children}, nil
}

// multiRootfsTar writes each platform's root filesystem under its
// directory of one tar, as buildx's tar exporter does with several
// platforms. Each tree is flattened by RootfsTar (so one applier writes
// them all) and copied in with its names moved under the directory.
func multiRootfsTar(ctx context.Context, imgs []PlatformImage, dest string) error {
	abs, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("resolving output file %s: %w", dest, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".kiln-platforms-*")
	if err != nil {
		return fmt.Errorf("creating temporary directory for %s: %w", dest, err)
	}
	defer os.RemoveAll(tmp)
	parts := make([]string, len(imgs))
	for i, pi := range imgs {
		parts[i] = filepath.Join(tmp, pi.Dir+".tar")
		if err := RootfsTar(ctx, pi.Image, parts[i]); err != nil {
			return err
		}
	}
	return writeFileAtomic(ctx, abs, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for i, pi := range imgs {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: pi.Dir + "/", Mode: 0o755, Format: tar.FormatPAX}); err != nil {
				return err
			}
			if err := copyTarUnder(ctx, tw, parts[i], pi.Dir); err != nil {
				return err
			}
		}
		return tw.Close()
	})
}

// copyTarUnder copies the entries of the tar file src into tw, under dir.
func copyTarUnder(ctx context.Context, tw *tar.Writer, src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", src, err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if name == "" || name == "/" {
			continue
		}
		trailing := strings.HasSuffix(name, "/")
		hdr.Name = path.Join(dir, name)
		if trailing {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = path.Join(dir, strings.TrimPrefix(hdr.Linkname, "./"))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
