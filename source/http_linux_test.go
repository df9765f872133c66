package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fileServer serves body at every path with the given headers, over TLS
// with httptest's own CA.
func fileServer(t *testing.T, body string, headers map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTP(t *testing.T) {
	const body = "hello from the server\n"
	sum := digest.FromString(body)
	lm := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name      string
		path      string
		headers   map[string]string
		opts      HTTPOptions
		wantName  string
		wantMtime time.Time
		wantErr   string
	}{
		{name: "url path", path: "/dir/file.txt", wantName: "file.txt", wantMtime: time.Unix(0, 0)},
		{name: "content-disposition", path: "/dl?id=3", headers: map[string]string{"Content-Disposition": `attachment; filename="real.bin"`}, wantName: "real.bin", wantMtime: time.Unix(0, 0)},
		{name: "manual name wins", path: "/x", headers: map[string]string{"Content-Disposition": `attachment; filename="real.bin"`}, opts: HTTPOptions{Filename: "x"}, wantName: "x", wantMtime: time.Unix(0, 0)},
		{name: "last-modified", path: "/f", headers: map[string]string{"Last-Modified": lm.Format(http.TimeFormat)}, wantName: "f", wantMtime: lm},
		{name: "checksum ok", path: "/f", opts: HTTPOptions{Checksum: sum}, wantName: "f", wantMtime: time.Unix(0, 0)},
		{name: "checksum mismatch", path: "/f", opts: HTTPOptions{Checksum: digest.FromString("other")}, wantErr: "digest mismatch"},
		{name: "too large", path: "/f", opts: HTTPOptions{MaxSize: 5}, wantErr: "over the limit"},
		{name: "bad checksum", path: "/f", opts: HTTPOptions{Checksum: "sha256:00"}, wantErr: "want sha256:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fileServer(t, body, tt.headers)
			tt.opts.Client = srv.Client()
			dir := t.TempDir()
			f, err := HTTP(context.Background(), srv.URL+tt.path, dir, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				// Nothing lands: not the file, not a temporary.
				if ents, _ := os.ReadDir(dir); len(ents) != 0 {
					t.Fatalf("the directory holds %v after a failed download", ents)
				}
				if tt.name == "checksum mismatch" {
					var ce *ChecksumError
					if !errors.As(err, &ce) || ce.Got != sum {
						t.Fatalf("err = %#v, want a ChecksumError with the served digest", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Name != tt.wantName {
				t.Errorf("name = %q, want %q", f.Name, tt.wantName)
			}
			if f.Digest != sum {
				t.Errorf("digest = %s, want %s", f.Digest, sum)
			}
			fi, err := os.Lstat(filepath.Join(dir, tt.wantName))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != 0o600 {
				t.Errorf("mode = %v, want -rw------- (BuildKit's)", fi.Mode())
			}
			if !fi.ModTime().Equal(tt.wantMtime) {
				t.Errorf("mtime = %v, want %v", fi.ModTime(), tt.wantMtime)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("the directory holds %d entries, want the file alone", len(ents))
			}
			b, _ := os.ReadFile(f.Path)
			if string(b) != body {
				t.Errorf("content = %q", b)
			}
		})
	}
}

func TestHTTPUntrustedCA(t *testing.T) {
	srv := fileServer(t, "x", nil)
	_, err := HTTP(context.Background(), srv.URL+"/f", t.TempDir(), HTTPOptions{})
	if err == nil || !contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a certificate error (the test CA is not trusted)", err)
	}
}

func TestHTTPStatus(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	dir := t.TempDir()
	_, err := HTTP(context.Background(), srv.URL+"/missing", dir, HTTPOptions{})
	if err == nil || !contains(err.Error(), "404") {
		t.Fatalf("err = %v, want the 404", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestHTTPNotModified(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "body")
	}))
	defer srv.Close()
	for _, tt := range []struct {
		etag    string
		wantNM  bool
		wantErr bool
	}{{etag: `"v1"`, wantNM: true}, {etag: `"v0"`}, {etag: ""}} {
		dir := t.TempDir()
		f, err := HTTP(context.Background(), srv.URL+"/f", dir, HTTPOptions{ETag: tt.etag})
		if err != nil {
			t.Fatal(err)
		}
		if f.NotModified != tt.wantNM || f.ETag != `"v1"` {
			t.Errorf("ETag %s: NotModified %v ETag %s", tt.etag, f.NotModified, f.ETag)
		}
		ents, _ := os.ReadDir(dir)
		if tt.wantNM != (len(ents) == 0) {
			t.Errorf("ETag %s: the directory holds %d entries", tt.etag, len(ents))
		}
	}
}
