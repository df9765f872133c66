package testutil

import (
	"archive/tar"
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"
)

// TarEntry is one entry of a crafted archive: the header as written, and
// the body of a regular file (Size is set from it when zero).
type TarEntry struct {
	Hdr  tar.Header
	Body string
}

// Dir, File, Symlink, Hardlink, Char, Block and Fifo make TarEntry values with
// owner 0:0 and mtime 0; names are written exactly as given (no cleaning:
// crafted archives hold "..", absolute and over-long names on purpose).
func Dir(name string, mode int64) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

// File is a regular file entry.
func File(name string, mode int64, body string) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, Body: body}
}

// Symlink is a symbolic link entry.
func Symlink(name, target string) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// Hardlink is a hard link entry; target is the linkname as written.
func Hardlink(name, target string) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// Char is a character device entry.
func Char(name string, major, minor int64) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor}}
}

// Block is a block device entry.
func Block(name string, major, minor int64) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeBlock, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor}}
}

// Fifo is a named pipe entry.
func Fifo(name string) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644}}
}

// WriteEntries writes entries to tw.
func WriteEntries(tw *tar.Writer, entries []TarEntry) error {
	for _, e := range entries {
		h := e.Hdr
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.Body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(0, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("writing tar header %q: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg && e.Body != "" {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				return fmt.Errorf("writing tar entry %q: %w", h.Name, err)
			}
		}
	}
	return nil
}

// WriteTar writes a tar archive to path, gzip-compressed when gz is set,
// streaming what gen writes (a million entries take no memory).
func WriteTar(path string, gz bool, gen func(tw *tar.Writer) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	var zw *gzip.Writer
	tw := tar.NewWriter(bw)
	if gz {
		if zw, err = gzip.NewWriterLevel(bw, gzip.BestCompression); err != nil {
			return err
		}
		tw = tar.NewWriter(zw)
	}
	if err := gen(tw); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// CraftedLayer writes entries as a gzip layer file in a temporary
// directory of the test and returns the layer.
func CraftedLayer(t testing.TB, entries ...TarEntry) v1.Layer {
	t.Helper()
	return StreamedLayer(t, func(tw *tar.Writer) error { return WriteEntries(tw, entries) })
}

// StreamedLayer is CraftedLayer for archives too large to hold in memory:
// gen writes the entries, straight into a gzip file.
func StreamedLayer(t testing.TB, gen func(tw *tar.Writer) error) v1.Layer {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer.tar.gz")
	if err := WriteTar(p, true, gen); err != nil {
		t.Fatalf("writing crafted layer: %v", err)
	}
	l, err := tarball.LayerFromFile(p)
	if err != nil {
		t.Fatalf("opening crafted layer: %v", err)
	}
	return l
}

// ImageOn returns base with layers appended, with base's config.
func ImageOn(t testing.TB, base v1.Image, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatalf("appending crafted layers: %v", err)
	}
	return img
}
