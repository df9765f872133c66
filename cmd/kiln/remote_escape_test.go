package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// escapeTar is an archive that tries every way out of where it is
// unpacked: ../ names, an absolute symlink and a relative one to the
// canary followed by entries through them, hardlinks to the canary file.
func escapeTar(t *testing.T, c *testutil.Canary, dockerfile string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []tar.Header{
		{Name: c.Rel() + "/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "../../../../../../../../../../../../../../../../../../../../../../../../../../../../" + strings.TrimPrefix(c.Dir, "/") + "/new", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "abs", Typeflag: tar.TypeSymlink, Linkname: c.Dir},
		{Name: "abs/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "abs/x/new", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "rel", Typeflag: tar.TypeSymlink, Linkname: c.Rel()},
		{Name: "rel/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "hard", Typeflag: tar.TypeLink, Linkname: c.File()},
	}
	body := map[string]string{}
	if dockerfile != "" {
		hdrs = append(hdrs, tar.Header{Name: "Dockerfile", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(dockerfile))})
		body["Dockerfile"] = dockerfile
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			b, ok := body[h.Name]
			if !ok {
				b = "pwned"
			}
			tw.Write([]byte(b))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// TestRemoteEscapes: an --unpack'ed remote archive and a tarball build
// context (from a URL and from stdin) that try to write outside leave the
// host canary untouched, whether the build succeeds or refuses them.
func TestRemoteEscapes(t *testing.T) {
	needRoot(t)
	canary := testutil.NewCanary(t)
	evil := escapeTar(t, canary, "")
	ctxTar := escapeTar(t, canary, "FROM scratch\nCOPY . /ctx/\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/evil.tar":
			w.Write(evil)
		case "/ctx.tar":
			w.Write(ctxTar)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	unpack := writeDockerfile(t, fmt.Sprintf("FROM scratch\nADD --unpack=true %s/evil.tar /x/\n", srv.URL))
	tests := []struct {
		name  string
		args  []string
		stdin []byte
	}{
		{name: "unpack", args: []string{unpack}},
		{name: "url context", args: []string{srv.URL + "/ctx.tar"}},
		{name: "stdin context", args: []string{"-"}, stdin: ctxTar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rootfs")
			args := append([]string{"build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest=" + out}, tt.args...)
			log, code := kilnWith(t, nil, bytes.NewReader(tt.stdin), args...)
			t.Logf("exit %d:\n%s", code, log)
			canary.Check(t)
		})
	}
}
