package copier

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-build/kiln/rooted"
)

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string) {
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(rel, target string) {
		if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
			t.Fatal(err)
		}
	}
	mk("a/b")
	mk("real")
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ln("abs", "/real")
	ln("rel", "a/b")
	ln("a/up", "../../../../real")
	ln("a/b/hop", "../../abs")
	ln("dangling", "/nowhere/x")
	ln("loop1", "loop2")
	ln("loop2", "loop1")
	ln("dot", ".")

	cases := []struct {
		in         string
		followLast bool
		want       string
		wantErr    bool
	}{
		{in: "", followLast: true, want: "/"},
		{in: "/", followLast: true, want: "/"},
		{in: "../../etc/passwd", followLast: true, want: "/etc/passwd"},
		{in: "abs/x", followLast: true, want: "/real/x"},
		{in: "abs", followLast: true, want: "/real"},
		{in: "abs", followLast: false, want: "/abs"},
		{in: "abs/", followLast: false, want: "/abs"},
		{in: "rel/c", followLast: true, want: "/a/b/c"},
		{in: "a/up/z", followLast: true, want: "/real/z"},
		{in: "a/b/hop/q", followLast: true, want: "/real/q"},
		{in: "dangling", followLast: true, want: "/nowhere/x"},
		{in: "missing/deeper", followLast: true, want: "/missing/deeper"},
		{in: "file/x", followLast: true, want: "/file/x"},
		{in: "dot/dot/a", followLast: true, want: "/a"},
		// Lexical first, like BuildKit: "rel/.." is "/" whatever rel is.
		{in: "rel/../real", followLast: true, want: "/real"},
		{in: "loop1", followLast: true, wantErr: true},
		{in: "loop1", followLast: false, want: "/loop1"},
	}
	r, err := rooted.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, tc := range cases {
		got, _, err := r.Resolve(tc.in, tc.followLast)
		if tc.wantErr {
			if !errors.Is(err, rooted.ErrTooManyLinks) {
				t.Errorf("resolveIn(%q) = %q, %v; want too many links", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("resolveIn(%q, %v) = %q, %v; want %q", tc.in, tc.followLast, got, err, tc.want)
		}
	}
}

func TestCleanKeepSlash(t *testing.T) {
	for in, want := range map[string]string{
		"/app":       "/app",
		"/app/":      "/app/",
		"/app/.":     "/app/.",
		"app//x/../": "/app/",
		"/":          "/",
		"/.":         "/.",
		".":          "/",
		"../../x":    "/x",
	} {
		if got := cleanKeepSlash(in); got != want {
			t.Errorf("cleanKeepSlash(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHasWildcard(t *testing.T) {
	for in, want := range map[string]bool{
		"a.go": false, "*.go": true, "a?": true, "[ab]": true, `\*.go`: false, `a\?b*`: true,
	} {
		if got := hasWildcard(in); got != want {
			t.Errorf("hasWildcard(%q) = %v, want %v", in, got, want)
		}
	}
}
