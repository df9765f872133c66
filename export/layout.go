package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// OCILayout writes img into the OCI image layout directory dir, like buildx
// -o type=oci,dest=DIR,tar=false. An existing layout gains the image: each
// name replaces the entry that had the same name, other entries stay. With
// no names the entry is tagged "latest", as BuildKit does.
func OCILayout(ctx context.Context, img v1.Image, dir string, names []string) error {
	return writeLayout(ctx, img, dir, names)
}

// OCIIndexLayout is OCILayout for an index (an image with its
// attestations).
func OCIIndexLayout(ctx context.Context, idx v1.ImageIndex, dir string, names []string) error {
	return writeLayout(ctx, idx, dir, names)
}

func writeLayout(ctx context.Context, a Artifact, dir string, names []string) error {
	parsed, err := parseNames(names)
	if err != nil {
		return err
	}
	if err := prepareLayoutDir(dir); err != nil {
		return err
	}
	desc, blobs, err := artifactBlobs(a)
	if err != nil {
		return fmt.Errorf("listing blobs of the image for %s: %w", dir, err)
	}
	desc.Annotations = descriptorAnnotations(a)

	// Blobs first, index last: a reader that sees the new index entry must
	// find every blob it points to.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, b := range blobs {
		g.Go(func() error { return writeLayoutBlob(gctx, dir, b) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), ociLayoutFile, 0o644); err != nil {
		return fmt.Errorf("writing oci-layout in %s: %w", dir, err)
	}
	return updateIndex(ctx, dir, desc, parsed)
}

// prepareLayoutDir creates dir, or checks that an existing one is empty or
// already an OCI layout: writing blobs/ and index.json into some unrelated
// directory is never what was meant.
func prepareLayoutDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating OCI layout %s: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	if len(entries) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("writing OCI layout into %s: the directory is not empty and has no oci-layout file", dir)
	}
	return nil
}

// writeLayoutBlob writes one blob unless the layout already has it.
func writeLayoutBlob(ctx context.Context, dir string, b blob) error {
	dest := filepath.Join(dir, filepath.FromSlash(b.layoutPath()))
	// Content addressing makes a present blob of the right size the right
	// blob (containerd and go-containerregistry trust it the same way);
	// re-hashing every base layer of every export would cost more.
	if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() && fi.Size() == b.size {
		return nil
	}
	return writeFileAtomic(ctx, dest, func(w io.Writer) error { return copyBlob(ctx, w, b) })
}

// updateIndex adds desc under names to dir/index.json, holding the same
// lock file BuildKit's client holds (index.json.lock), so a concurrent
// kiln or buildctl writing the same layout does not lose an entry.
func updateIndex(ctx context.Context, dir string, desc v1.Descriptor, names []imageName) error {
	indexPath := filepath.Join(dir, "index.json")
	unlock, err := lockFile(indexPath + ".lock")
	if err != nil {
		return fmt.Errorf("locking %s: %w", indexPath, err)
	}
	defer unlock()

	index := v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json"}
	data, err := os.ReadFile(indexPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading %s: %w", indexPath, err)
	default:
		if err := json.Unmarshal(data, &index); err != nil {
			return fmt.Errorf("parsing %s: %w", indexPath, err)
		}
	}

	var entries []v1.Descriptor
	if len(names) == 0 {
		d := desc
		d.Annotations = map[string]string{}
		maps.Copy(d.Annotations, desc.Annotations)
		d.Annotations[annotationRefName] = "latest"
		entries = []v1.Descriptor{d}
	} else {
		entries = namedDescriptors(desc, names)
	}
	for _, e := range entries {
		keep := index.Manifests[:0]
		for _, m := range index.Manifests {
			if m.Annotations[annotationRefName] != e.Annotations[annotationRefName] ||
				m.Annotations[annotationImageName] != e.Annotations[annotationImageName] {
				keep = append(keep, m)
			}
		}
		index.Manifests = append(keep, e)
	}

	data, err = json.Marshal(index)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", indexPath, err)
	}
	return writeFileAtomic(ctx, indexPath, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}
