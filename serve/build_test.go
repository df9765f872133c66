package serve

import (
	"archive/tar"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestBuildQuery(t *testing.T) {
	for _, tc := range []struct {
		query      string
		want       BuildRequest
		dockerfile string
		quiet      bool
		err        string // a substring of the error
	}{
		{query: "", want: BuildRequest{Network: "default"}, dockerfile: "Dockerfile"},
		{
			query:      "t=a:1&t=b&dockerfile=sub/D&target=s&nocache=1&pull=true&q=1&networkmode=none&platform=linux/arm64&rm=1&forcerm=1&unknown=x",
			want:       BuildRequest{Tags: []string{"a:1", "b"}, Target: "s", NoCache: true, Pull: true, Network: "none", Platform: "linux/arm64"},
			dockerfile: "sub/D", quiet: true,
		},
		{query: "nocache=0&pull=false&networkmode=bridge", want: BuildRequest{Network: "default"}, dockerfile: "Dockerfile"},
		{
			query:      `buildargs={"A":"b","U":null}&labels={"l":"v"}`,
			want:       BuildRequest{BuildArgs: map[string]string{"A": "b"}, Labels: map[string]string{"l": "v"}, Network: "default"},
			dockerfile: "Dockerfile",
		},
		{query: "buildargs=[1]", err: "invalid query parameter buildargs"},
		{query: `buildargs={"A":1}`, err: "invalid query parameter buildargs"},
		{query: `buildargs={"":"x"}`, err: "empty name"},
		{query: "labels=x", err: "invalid query parameter labels"},
		{query: "networkmode=container:x", err: "invalid query parameter networkmode"},
		{query: "t=", err: "invalid query parameter t"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/build?"+strings.ReplaceAll(tc.query, `"`, "%22"), nil)
			got, df, quiet, err := buildQuery(r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) || df != tc.dockerfile || quiet != tc.quiet {
				t.Errorf("got %+v %q %v, want %+v %q %v", got, df, quiet, tc.want, tc.dockerfile, tc.quiet)
			}
		})
	}
}

func TestContextChecker(t *testing.T) {
	sym := func(name, target string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}
	}
	file := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeReg} }
	for _, tc := range []struct {
		name    string
		entries []*tar.Header
		err     string // of the last entry; "" accepted
	}{
		{"plain", []*tar.Header{file("Dockerfile"), file("a/b/c"), file("./d"), file("/e")}, ""},
		{"dotdot inside", []*tar.Header{file("a/../b")}, ""},
		{"dotdot out", []*tar.Header{file("a/../../b")}, "leads outside the context"},
		{"absolute dotdot out", []*tar.Header{file("/../etc/passwd")}, "leads outside the context"},
		{"absolute symlink", []*tar.Header{sym("l", "/etc"), file("m")}, ""},
		{"below a symlink", []*tar.Header{sym("l", "/etc"), file("l/passwd")}, "through the symlink"},
		{"below a nested symlink", []*tar.Header{sym("a/l", "../.."), file("a/l/x/y")}, "through the symlink"},
		{"symlink replaced", []*tar.Header{sym("l", "/etc"), {Name: "l", Typeflag: tar.TypeDir}, file("l/x")}, ""},
		{"hardlink out", []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../x"}}, "outside the context"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newContextChecker()
			var err error
			for i, h := range tc.entries {
				if err = c.check(h); err != nil && i < len(tc.entries)-1 {
					t.Fatalf("entry %q refused: %v", h.Name, err)
				}
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestWithTag(t *testing.T) {
	for in, want := range map[string]string{
		"x": "x:latest", "x:1": "x:1", "reg:5000/a/b": "reg:5000/a/b:latest", "a@sha256:00": "a@sha256:00",
	} {
		if got := withTag(in); got != want {
			t.Errorf("withTag(%q) = %q, want %q", in, got, want)
		}
	}
}
