package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-build/kiln/registry"
	"github.com/kiln-build/kiln/registry/registrytest"
)

// bombImage is an image whose one layer is a few KiB of gzip unpacking to
// size bytes of zeros: a decompression bomb whose digests are all correct.
func bombImage(t *testing.T, size int) v1.Image {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(make([]byte, size))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(gz.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestMaxLayerSize builds FROM an image holding a decompression bomb:
// refused with a clear error under --max-layer-size or kiln.toml's
// [limits], the store left without a trace of it, and accepted with the
// default limit.
func TestMaxLayerSize(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	srv := registrytest.Serve(t, registrytest.ServerOptions{})
	ref := srv.Host + "/bomb/app:1"
	if _, err := (&registry.Resolver{}).Push(context.Background(), bombImage(t, 8<<20), []string{ref}); err != nil {
		t.Fatal(err)
	}
	ctxDir := registryContext(t, "FROM "+ref+"\nCOPY greeting /greeting\n")

	tests := []struct {
		name     string
		args     []string
		toml     string
		wantCode int
		want     string
	}{
		{name: "flag", args: []string{"--max-layer-size", "1m"}, wantCode: 1, want: "unpacks to more than 1 MiB"},
		{name: "kiln.toml", toml: "[limits]\nlayer-size = \"2MiB\"\n", wantCode: 1, want: "unpacks to more than 2 MiB"},
		{name: "flag over kiln.toml", args: []string{"--max-layer-size", "16m"}, toml: "[limits]\nlayer-size = \"1MiB\"\n"},
		{name: "not a size", args: []string{"--max-layer-size", "0"}, wantCode: 2, want: "want a positive size"},
		{name: "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(os.Getenv("KILN_CONFIG"), []byte(tt.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			args := append([]string{"build", "--root", root, "--progress=plain"}, tt.args...)
			out, code := kiln(t, append(args, ctxDir)...)
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tt.wantCode, tt.want, out)
			}
			if code == 0 {
				return
			}
			if tt.wantCode == 1 && !strings.Contains(out, "--max-layer-size") {
				t.Errorf("the error does not say how to raise the limit:\n%s", out)
			}
			for _, d := range []string{"layers", "tmp"} {
				ents, _ := os.ReadDir(filepath.Join(root, d))
				for _, e := range ents {
					t.Errorf("%s/%s left in the store after a refused pull", d, e.Name())
				}
			}
		})
	}
}
