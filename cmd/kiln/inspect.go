package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/export"
)

func newInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect PATH",
		Short: "Show the digest, config and layers of an exported image",
		Long: `Show the manifest digest, the config and the layers of an image that kiln
exported: an OCI archive or layout (type=oci) or a docker archive
(type=docker).`,
		Example: `  kiln inspect /tmp/app.tar`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("inspect takes exactly one PATH")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			img, cleanup, err := openExported(args[0])
			if err != nil {
				return err
			}
			defer cleanup()
			return printImage(cmd.OutOrStdout(), img)
		},
	}
}

// openExported reads an OCI layout directory, an OCI archive or a docker
// archive.
func openExported(p string) (v1.Image, func(), error) {
	nop := func() {}
	st, err := os.Stat(p)
	if err != nil {
		return nil, nop, fmt.Errorf("opening %s: %w", p, err)
	}
	if st.IsDir() {
		img, err := firstImage(p)
		return img, nop, err
	}
	if isDockerArchive(p) {
		img, err := tarball.ImageFromPath(p, nil)
		if err != nil {
			return nil, nop, fmt.Errorf("reading docker archive %s: %w", p, err)
		}
		return img, nop, nil
	}
	dir, err := os.MkdirTemp("", "kiln-inspect-")
	if err != nil {
		return nil, nop, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	if err := untar(p, dir); err != nil {
		cleanup()
		return nil, nop, fmt.Errorf("reading OCI archive %s: %w", p, err)
	}
	img, err := firstImage(dir)
	if err != nil {
		cleanup()
		return nil, nop, err
	}
	return img, cleanup, nil
}

func isDockerArchive(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		if h.Name == "manifest.json" {
			return true
		}
		if h.Name == "index.json" || h.Name == "oci-layout" {
			return false
		}
	}
}

func firstImage(dir string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.MediaType.IsImage() {
			return idx.Image(d.Digest)
		}
		// An image with its attestations (--provenance) is an index: its
		// image is the entry that is no attestation manifest.
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			cm, err := child.IndexManifest()
			if err != nil {
				return nil, err
			}
			for _, c := range cm.Manifests {
				if c.MediaType.IsImage() && c.Annotations[export.AnnotationReferenceType] == "" {
					return child.Image(c.Digest)
				}
			}
		}
	}
	return nil, errors.New("the layout holds no image")
}

// untar extracts the plain files of an OCI archive (blobs and index).
func untar(p, dir string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)[1:]
		if name == "" || strings.HasPrefix(name, "..") {
			continue
		}
		dst := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			out, err := os.Create(dst)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

func printImage(w io.Writer, img v1.Image) error {
	dg, err := img.Digest()
	if err != nil {
		return err
	}
	mt, _ := img.MediaType()
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, raw, "  ", "  "); err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "digest:  %s\nmanifest media type: %s\nconfig:  %s\n  %s\n", dg, mt, cfgName, pretty.String())
	fmt.Fprintf(w, "layers:  %d\n", len(m.Layers))
	for i, l := range m.Layers {
		fmt.Fprintf(w, "  %2d  %s  %9d bytes  %s\n", i+1, l.Digest, l.Size, l.MediaType)
	}
	return nil
}
