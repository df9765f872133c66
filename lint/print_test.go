package lint

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// PrintSource shows the window BuildKit's errdefs.Source.Print shows: four
// steps of context around one line, two around a range, counted the way
// BuildKit counts them.
func TestPrintSource(t *testing.T) {
	src := []byte("l1\nl2\nl3\nl4\nl5\nl6\nl7\nl8\n")
	rng := func(a, b int) []bkparser.Range {
		return []bkparser.Range{{Start: bkparser.Position{Line: a}, End: bkparser.Position{Line: b}}}
	}
	tests := []struct {
		loc        []bkparser.Range
		first      string // first listed line
		last       string // last listed line
		marked     int
		wantOutput bool
	}{
		{rng(4, 4), "   2 |     l2", "   6 |     l6", 1, true},
		{rng(1, 1), "   1 | >>> l1", "   3 |     l3", 1, true},
		{rng(8, 8), "   6 |     l6", "   9 |     ", 1, true},
		{rng(3, 5), "   2 |     l2", "   6 |     l6", 3, true},
		{rng(20, 20), "", "", 0, false},
		{nil, "", "", 0, false},
	}
	for _, tt := range tests {
		var b strings.Builder
		PrintSource(&b, "Dockerfile", src, tt.loc)
		out := b.String()
		if !tt.wantOutput {
			if out != "" {
				t.Errorf("%v: printed %q", tt.loc, out)
			}
			continue
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		body := lines[2 : len(lines)-1]
		if !strings.HasPrefix(lines[0], "Dockerfile:") || body[0] != tt.first || body[len(body)-1] != tt.last || strings.Count(out, ">>>") != tt.marked {
			t.Errorf("%v:\n%s", tt.loc, out)
		}
	}
}

// testdata/buildkit/buildctl-lint.txt is what BuildKit v0.34 answered
// (buildctl build --opt requestid=frontend.lint, the peers' buildkitd)
// for testdata/buildkit/Dockerfile, with ignored.txt in .dockerignore and
// busybox from the peers' registry: every warning, in the same order,
// with the same excerpts.
func TestMatchesBuildKit(t *testing.T) {
	src, err := os.ReadFile("testdata/buildkit/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/buildkit/buildctl-lint.txt")
	if err != nil {
		t.Fatal(err)
	}
	busybox := func(_ context.Context, ref string, _ ocispecs.Platform) (*Image, error) {
		if ref != "127.0.0.1:5000/library/busybox:latest" {
			return nil, errors.New("not found")
		}
		return &Image{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"}}, nil
	}
	res, err := Run(context.Background(), src, Options{AllStages: true, Ignore: []string{"ignored.txt"}, BaseImage: busybox})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	PrintCheck(&b, "Dockerfile", src, res.Warnings)
	got := b.String()
	header := "Check complete, 24 warnings have been found!\n" // buildx's line, not buildctl's
	if !strings.HasPrefix(got, header) || got[len(header):] != string(want) {
		t.Errorf("differs from BuildKit's answer:\n%s", got)
	}
}
