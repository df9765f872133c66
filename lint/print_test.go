package lint

import (
	"strings"
	"testing"

	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
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
