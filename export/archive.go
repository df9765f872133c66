// Package export writes a built image out of kiln: as an OCI image layout
// (a directory or a tar file), as a `docker load` tarball, or as its
// flattened root filesystem (a directory or a tar file). Layers are always
// copied as the compressed blobs the manifest names, never recompressed.
package export

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Annotations BuildKit (through containerd's archive exporter) puts on an
// index.json entry so that `ctr import`, `docker load` (containerd store)
// and skopeo find the image by name.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// ociLayoutFile is the oci-layout marker file of every OCI image layout.
var ociLayoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}`)

// OCIArchive writes img as an OCI image layout in a tar file, like buildx
// -o type=oci,dest=FILE: one index.json entry per name, annotated with the
// full name and its tag; no names, one unannotated entry.
func OCIArchive(ctx context.Context, img v1.Image, dest string, names []string) error {
	return writeArchive(ctx, img, dest, names, false)
}

// OCIIndexArchive is OCIArchive for an index (an image with its
// attestations): index.json names the index, as BuildKit's oci exporter
// writes an attested image.
func OCIIndexArchive(ctx context.Context, idx v1.ImageIndex, dest string, names []string) error {
	return writeArchive(ctx, idx, dest, names, false)
}

// DockerArchive writes img as a tarball for `docker load`, like buildx
// -o type=docker,dest=FILE: an OCI layout plus the manifest.json that
// docker reads, tagged with names (none: the image loads untagged).
func DockerArchive(ctx context.Context, img v1.Image, dest string, names []string) error {
	return writeArchive(ctx, img, dest, names, true)
}

// writeArchive produces BuildKit's archive shape: entries sorted by name
// (blobs/, blobs/sha256/, blobs/sha256/…, index.json, [manifest.json],
// oci-layout), blobs read-only, every mtime the epoch, so the same image
// always gives the same archive bytes.
func writeArchive(ctx context.Context, a Artifact, dest string, names []string, docker bool) error {
	parsed, err := parseNames(names)
	if err != nil {
		return err
	}
	desc, blobs, err := artifactBlobs(a)
	if err != nil {
		return fmt.Errorf("listing blobs of the image for %s: %w", dest, err)
	}
	desc.Annotations = descriptorAnnotations(a)
	index, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     "application/vnd.oci.image.index.v1+json",
		Manifests:     namedDescriptors(desc, parsed),
	})
	if err != nil {
		return fmt.Errorf("encoding index.json: %w", err)
	}
	var dockerManifest []byte
	if docker {
		img, ok := a.(v1.Image)
		if !ok {
			return fmt.Errorf("writing %s: a docker archive holds a single image, not an index", dest)
		}
		if dockerManifest, err = dockerManifestJSON(img, parsed); err != nil {
			return err
		}
	}

	return writeDest(ctx, dest, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		if err := writeDir(tw, "blobs/"); err != nil {
			return err
		}
		algs := map[string]bool{}
		for _, b := range blobs {
			if !algs[b.digest.Algorithm] {
				algs[b.digest.Algorithm] = true
				if err := writeDir(tw, "blobs/"+b.digest.Algorithm+"/"); err != nil {
					return err
				}
			}
			if err := writeBlobEntry(ctx, w, tw, b); err != nil {
				return err
			}
		}
		if err := writeFile(tw, "index.json", index, 0o644); err != nil {
			return err
		}
		if docker {
			if err := writeFile(tw, "manifest.json", dockerManifest, 0o644); err != nil {
				return err
			}
		}
		if err := writeFile(tw, "oci-layout", ociLayoutFile, 0o444); err != nil {
			return err
		}
		return tw.Close()
	})
}

// namedDescriptors returns the index entries for an image: containerd's
// exporter writes one entry per name so that each name survives an import.
func namedDescriptors(desc v1.Descriptor, names []imageName) []v1.Descriptor {
	if len(names) == 0 {
		return []v1.Descriptor{desc}
	}
	out := make([]v1.Descriptor, 0, len(names))
	for _, n := range names {
		d := desc
		d.Annotations = map[string]string{}
		maps.Copy(d.Annotations, desc.Annotations) // --annotation manifest-descriptor / index-descriptor
		d.Annotations[annotationImageName] = n.full
		d.Annotations[annotationRefName] = n.tag
		out = append(out, d)
	}
	return out
}

// dockerManifestEntry is one element of a docker archive's manifest.json;
// field order as docker and containerd write it.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func dockerManifestJSON(img v1.Image, names []imageName) ([]byte, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("parsing manifest: %w", err)
	}
	e := dockerManifestEntry{Config: blob{digest: m.Config.Digest}.layoutPath()}
	for _, n := range names {
		e.RepoTags = append(e.RepoTags, n.familiar)
	}
	for _, l := range m.Layers {
		e.Layers = append(e.Layers, blob{digest: l.Digest}.layoutPath())
	}
	b, err := json.Marshal([]dockerManifestEntry{e})
	if err != nil {
		return nil, fmt.Errorf("encoding manifest.json: %w", err)
	}
	return b, nil
}

func fileHeader(name string, size int64, mode int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     mode,
		ModTime:  time.Unix(0, 0),
	}
}

func writeDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir,
		Name:     name,
		Mode:     0o755,
		ModTime:  time.Unix(0, 0),
	})
}

func writeFile(tw *tar.Writer, name string, data []byte, mode int64) error {
	if err := tw.WriteHeader(fileHeader(name, int64(len(data)), mode)); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// writeBlobEntry writes b as the archive entry at its layout path: copied
// in the kernel when it can be, else through tw. The blob is opened once.
func writeBlobEntry(ctx context.Context, w io.Writer, tw *tar.Writer, b blob) error {
	rc, err := b.open()
	if err != nil {
		return fmt.Errorf("opening blob %s: %w", b.digest, err)
	}
	defer rc.Close()
	hdr := fileHeader(b.layoutPath(), b.size, 0o444)
	if done, err := copyBlobInKernel(ctx, w, tw, hdr, b, rc); done || err != nil {
		return err
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	return copyBlobFrom(ctx, tw, b, rc)
}
