package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/registry/registrytest"
)

// craftedRegistry serves one manifest for every tag, as given, and counts
// the blob requests it refuses: the tests check what kiln does before it
// asks for any blob.
func craftedRegistry(t *testing.T, manifest func(w http.ResponseWriter)) (host string, blobGets *atomic.Int64) {
	t.Helper()
	blobGets = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/manifests/"):
			manifest(w)
		default:
			blobGets.Add(1)
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), blobGets
}

func serveManifest(t *testing.T, m v1.Manifest) func(http.ResponseWriter) {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Write(b)
	}
}

func TestManifestLimit(t *testing.T) {
	big := strings.Repeat(" ", 1<<20) + "{}"
	tests := []struct {
		name  string
		serve func(w http.ResponseWriter)
	}{
		{name: "with Content-Length", serve: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			w.Write([]byte(big))
		}},
		{name: "streamed without a length", serve: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			for i := 0; i < len(big); i += 4096 {
				w.Write([]byte(big[i:min(i+4096, len(big))]))
				w.(http.Flusher).Flush()
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, _ := craftedRegistry(t, tt.serve)
			r := &Resolver{Config: Config{Limits: Limits{ManifestSize: 64 << 10}}, Backoff: fastBackoff}
			_, _, err := r.Resolve(context.Background(), host+"/big/app:1")
			var tl *TooLargeError
			if !errors.As(err, &tl) || tl.What != "manifest" {
				t.Fatalf("resolving a 1 MiB manifest with a 64 KiB limit: %v", err)
			}
			if !strings.Contains(err.Error(), "manifest-size") {
				t.Errorf("error %q does not name the setting", err)
			}
		})
	}
	t.Run("a real manifest fits", func(t *testing.T) {
		srv := registrytest.Serve(t, registrytest.ServerOptions{})
		ref := pushRandom(t, srv.Host, "small/app:1", &Resolver{})
		r := &Resolver{Config: Config{Limits: Limits{ManifestSize: 64 << 10}}}
		if _, _, err := r.Resolve(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
	})
}

// TestConfigLimit serves manifests declaring configs of absurd or unknown
// size: kiln must refuse them from the manifest alone, before fetching.
func TestConfigLimit(t *testing.T) {
	digest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	tests := []struct {
		name   string
		size   int64
		limits Limits
		want   string
	}{
		{name: "256 MiB", size: 256 << 20, want: "256 MiB"},
		{name: "just over the default", size: int64(DefaultLimits.ConfigSize) + 1, want: "over kiln's limit of 8 MiB"},
		{name: "over a configured limit", size: 2 << 20, limits: Limits{ConfigSize: 1 << 20}, want: "config-size"},
		{name: "unknown size", size: -1, want: "negative config size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, blobGets := craftedRegistry(t, serveManifest(t, v1.Manifest{
				SchemaVersion: 2,
				MediaType:     types.OCIManifestSchema1,
				Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: tt.size, Digest: digest},
			}))
			r := &Resolver{Config: Config{Limits: tt.limits}, Backoff: fastBackoff}
			_, _, err := r.Resolve(context.Background(), host+"/big/config:1")
			var tl *TooLargeError
			if err == nil || (tt.size >= 0 && (!errors.As(err, &tl) || tl.What != "config")) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want the config refused (%q)", err, tt.want)
			}
			if n := blobGets.Load(); n != 0 {
				t.Errorf("kiln asked for %d blobs before refusing", n)
			}
		})
	}
}

// nestedIndex returns img wrapped in depth image indexes, each naming the
// next as its linux/amd64 entry.
func nestedIndex(img v1.Image, depth int) v1.ImageIndex {
	amd64 := &v1.Platform{OS: "linux", Architecture: "amd64"}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: amd64}})
	for i := 1; i < depth; i++ {
		idx = mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx, Descriptor: v1.Descriptor{Platform: amd64}})
	}
	return idx
}

func TestIndexDepth(t *testing.T) {
	srv := registrytest.Serve(t, registrytest.ServerOptions{})
	img := randomImage(t)
	want, _ := img.Digest()
	tests := []struct {
		name    string
		depth   int
		limits  Limits
		wantErr string
	}{
		{name: "one level", depth: 1},
		{name: "at the default limit", depth: DefaultLimits.IndexDepth},
		{name: "50 deep", depth: 50, wantErr: "nested more than 8 deep"},
		{name: "50 deep with a raised limit", depth: 50, limits: Limits{IndexDepth: 50}},
		{name: "over a lowered limit", depth: 3, limits: Limits{IndexDepth: 2}, wantErr: "index-depth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := srv.Host + "/nested/app:" + strings.ReplaceAll(tt.name, " ", "-")
			if _, err := (&Resolver{}).Push(context.Background(), nestedIndex(img, tt.depth), []string{ref}); err != nil {
				t.Fatal(err)
			}
			r := &Resolver{Config: Config{Limits: tt.limits}}
			got, _, err := r.Resolve(context.Background(), ref)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := got.Digest(); d != want {
				t.Errorf("resolved %s, want %s", d, want)
			}
		})
	}
}

func TestLimitsConfig(t *testing.T) {
	tests := []struct {
		name, toml string
		want       Limits
		wantErr    string
	}{
		{name: "none", toml: "", want: Limits{}},
		{name: "units and integers", toml: "[limits]\nmanifest-size = \"8MiB\"\nconfig-size = 1048576\nindex-depth = 3\nlayer-size = \"100g\"\n",
			want: Limits{ManifestSize: 8 << 20, ConfigSize: 1 << 20, IndexDepth: 3, LayerSize: 100 << 30}},
		{name: "bad unit", toml: "[limits]\nlayer-size = \"12 parsecs\"\n", wantErr: "want a size"},
		{name: "negative", toml: "[limits]\nindex-depth = -1\n", wantErr: "index-depth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "kiln.toml")
			if err := os.WriteFile(p, []byte(tt.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Limits != tt.want {
				t.Errorf("limits %+v, want %+v", c.Limits, tt.want)
			}
			if d := c.Limits.WithDefaults(); d.ManifestSize == 0 || d.ConfigSize == 0 || d.IndexDepth == 0 || d.LayerSize == 0 {
				t.Errorf("defaults left a zero limit: %+v", d)
			}
		})
	}
}
