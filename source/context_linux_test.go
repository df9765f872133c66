package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/internal/testutil"
)

type entry struct {
	name, body, link string
	typ              byte
}

func makeTar(t *testing.T, ents []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func xzc(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestReadStdinContext(t *testing.T) {
	plain := makeTar(t, []entry{{name: "Dockerfile", body: "FROM scratch\nCOPY a /\n"}, {name: "dir/", typ: tar.TypeDir}, {name: "dir/a", body: "A"}})
	tests := []struct {
		name      string
		in        []byte
		wantDF    string // a lone Dockerfile's content
		wantFiles map[string]string
	}{
		{name: "tar", in: plain, wantFiles: map[string]string{"Dockerfile": "FROM scratch\nCOPY a /\n", "dir/a": "A"}},
		{name: "gzip", in: gz(t, plain), wantFiles: map[string]string{"dir/a": "A"}},
		{name: "xz", in: xzc(t, plain), wantFiles: map[string]string{"dir/a": "A"}},
		{name: "dockerfile", in: []byte("FROM scratch\nLABEL a=b\n"), wantDF: "FROM scratch\nLABEL a=b\n"},
		{name: "long dockerfile", in: []byte("FROM scratch\n" + strings.Repeat("# comment line\n", 10000)), wantDF: "FROM scratch\n" + strings.Repeat("# comment line\n", 10000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ReadStdinContext(context.Background(), bytes.NewReader(tt.in), filepath.Join(t.TempDir(), "c"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantDF != "" {
				b, err := os.ReadFile(c.Dockerfile)
				if err != nil || string(b) != tt.wantDF {
					t.Fatalf("Dockerfile = %.40q, %v", b, err)
				}
				if ents, _ := os.ReadDir(c.Dir); len(ents) != 0 {
					t.Fatalf("context holds %v, want it empty", ents)
				}
				return
			}
			if c.Dockerfile != "" {
				t.Fatalf("a tar taken as a Dockerfile")
			}
			for p, want := range tt.wantFiles {
				b, err := os.ReadFile(filepath.Join(c.Dir, p))
				if err != nil || string(b) != want {
					t.Errorf("%s = %q, %v; want %q", p, b, err, want)
				}
			}
		})
	}
}

// TestContextEscape: a context tar that names ../ paths, or writes
// through a symlink it planted, changes nothing outside the context.
func TestContextEscape(t *testing.T) {
	canary := testutil.NewCanary(t)
	tars := map[string][]entry{
		"dotdot":             {{name: canary.Rel() + "/file", body: "pwned"}, {name: "../../../../../../../../../../../../../../../../../../../../../../../../" + strings.TrimPrefix(canary.Dir, "/") + "/new", body: "pwned"}},
		"abs symlink":        {{name: "l", typ: tar.TypeSymlink, link: canary.Dir}, {name: "l/file", body: "pwned"}, {name: "l/new", body: "pwned"}},
		"rel symlink":        {{name: "d/", typ: tar.TypeDir}, {name: "d/l", typ: tar.TypeSymlink, link: canary.Rel()}, {name: "d/l/file", body: "pwned"}},
		"hardlink":           {{name: "h", typ: tar.TypeLink, link: canary.File()}, {name: "h2", typ: tar.TypeLink, link: canary.Rel() + "/file"}},
		"dockerfile symlink": {{name: "Dockerfile", typ: tar.TypeSymlink, link: canary.File()}, {name: ".dockerignore", typ: tar.TypeSymlink, link: canary.File()}},
		"dockerignore fifo":  {{name: "Dockerfile", body: "FROM scratch\n"}, {name: ".dockerignore", typ: tar.TypeFifo}},
	}
	for name, ents := range tars {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "c")
			c, err := ReadStdinContext(context.Background(), bytes.NewReader(makeTar(t, ents)), dir)
			if err != nil {
				t.Logf("refused: %v", err)
			} else {
				df, err := ContextFiles(c.Dir, "Dockerfile", filepath.Join(dir, "df"))
				if err == nil {
					b, _ := os.ReadFile(df)
					if strings.Contains(string(b), "canary") || len(b) > 0 && name == "dockerfile symlink" {
						t.Errorf("the Dockerfile read the host: %q", b)
					}
				}
				if name == "dockerignore fifo" {
					if fi, err := os.Lstat(filepath.Join(c.Dir, ".dockerignore")); err == nil && !fi.Mode().IsRegular() {
						t.Errorf(".dockerignore is still %v", fi.Mode())
					}
				}
			}
			canary.Check(t)
		})
	}
}

func TestFetchContext(t *testing.T) {
	ctx := context.Background()
	archive := gz(t, makeTar(t, []entry{{name: "Dockerfile", body: "FROM scratch\n"}, {name: "x", body: "X"}}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ctx.tar.gz":
			w.Write(archive)
		case "/Dockerfile":
			io.WriteString(w, "FROM scratch\nLABEL from=url\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	c, err := FetchContext(ctx, srv.URL+"/ctx.tar.gz", filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir, "x")); err != nil || string(b) != "X" || c.Dockerfile != "" {
		t.Errorf("tarball context: x = %q, %v; Dockerfile %q", b, err, c.Dockerfile)
	}

	c, err = FetchContext(ctx, srv.URL+"/Dockerfile", filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(c.Dockerfile); err != nil || !strings.Contains(string(b), "from=url") {
		t.Errorf("Dockerfile URL: %q, %v", b, err)
	}

	repo := testutil.NewGitRepo(t)
	c, err = FetchContext(ctx, testutil.GitHTTP(t, repo.Base)+"/repo.git#v1:sub", filepath.Join(t.TempDir(), "g"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir, "a.txt")); err != nil || string(b) != "a1\n" {
		t.Errorf("git context: a.txt = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "..", ".git")); err == nil {
		t.Errorf("git context kept .git")
	}
}
