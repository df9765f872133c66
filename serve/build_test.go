package serve

import (
	"archive/tar"
	"context"
	"errors"
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
		{
			// what the docker CLI sends when none is set
			query:      "memory=0&memswap=0&cpushares=0&cpuquota=0&cpuperiod=0&shmsize=0&cpusetcpus=&cachefrom=null",
			want:       BuildRequest{Network: "default"},
			dockerfile: "Dockerfile",
		},
		{
			query: `memory=67108864&memswap=-1&cpushares=512&cpuquota=150000&shmsize=1048576&extrahosts=db:10.0.0.5&extrahosts=v6:fd00::1&cachefrom=["r/app:cache"]`,
			want: BuildRequest{Network: "default", Memory: 64 << 20, MemorySwap: -1, CPUShares: 512, CPUs: 1.5, ShmSize: 1 << 20,
				ExtraHosts: []string{"db:10.0.0.5", "v6:fd00::1"}, CacheFrom: []string{"r/app:cache"}},
			dockerfile: "Dockerfile",
		},
		{query: "cpuquota=50000&cpuperiod=200000", want: BuildRequest{Network: "default", CPUs: 0.25}, dockerfile: "Dockerfile"},
		{query: "memory=1.5g", err: "invalid query parameter memory"},
		{query: "memory=-1", err: "invalid query parameter memory"},
		{query: "memswap=-2", err: "invalid query parameter memswap"},
		{query: "memory=100&memswap=50", err: "invalid query parameter memswap"},
		{query: "memswap=100", err: "needs memory"},
		{query: "cpushares=-1", err: "invalid query parameter cpushares"},
		{query: "cpuquota=999", err: "invalid query parameter cpuquota"},
		{query: "cpuquota=50000&cpuperiod=999", err: "invalid query parameter cpuperiod"},
		{query: "cpusetcpus=0", err: "invalid query parameter cpusetcpus"},
		{query: "shmsize=x", err: "invalid query parameter shmsize"},
		{query: "extrahosts=db", err: "invalid query parameter extrahosts"},
		{query: "cachefrom={}", err: "invalid query parameter cachefrom"},
		{query: `cachefrom=["type=local,src=/"]`, err: "invalid query parameter cachefrom"},
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

// TestBuildTurn: past MaxConcurrent a build waits, saying so, and a
// waiting build whose client leaves gives up its place.
func TestBuildTurn(t *testing.T) {
	s := New(nil)
	s.SetBuilder(nil, BuildOptions{MaxConcurrent: 1})
	var progress strings.Builder
	release, err := s.buildTurn(context.Background(), &progress)
	if err != nil {
		t.Fatal(err)
	}
	if progress.Len() != 0 {
		t.Errorf("the first build waited: %q", progress.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	var waiting strings.Builder
	go func() {
		_, err := s.buildTurn(ctx, &waiting)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("a waiting build whose client left: %v, want context.Canceled", err)
	}
	release()
	again, err := s.buildTurn(context.Background(), &progress)
	if err != nil || progress.Len() != 0 {
		t.Fatalf("after the first build: %v, %q", err, progress.String())
	}
	again()
}
