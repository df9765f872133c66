package lint

import (
	"fmt"
	"io"
	"sort"
	"strings"

	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// PrintCheck writes what `docker buildx build --check` prints: a count,
// then each warning (in line order) with its rule, URL, message and the
// Dockerfile lines it concerns. name and src are the Dockerfile's.
func PrintCheck(w io.Writer, name string, src []byte, warnings []Warning) {
	var b strings.Builder
	switch len(warnings) {
	case 0:
		b.WriteString("Check complete, no warnings found.\n")
	case 1:
		b.WriteString("Check complete, 1 warning has been found!\n")
	default:
		fmt.Fprintf(&b, "Check complete, %d warnings have been found!\n", len(warnings))
	}
	sorted := append([]Warning(nil), warnings...)
	// sort.Slice, not SliceStable: warnings of one line come out in the
	// order BuildKit's (unstable, but deterministic) sort leaves them.
	sort.Slice(sorted, func(i, j int) bool {
		li, lj := len(sorted[i].Location), len(sorted[j].Location)
		if li == 0 || lj == 0 {
			if li == 0 && lj == 0 {
				return sorted[i].Rule < sorted[j].Rule
			}
			return li == 0
		}
		return sorted[i].Line() < sorted[j].Line()
	})
	for _, warn := range sorted {
		fmt.Fprintf(&b, "\nWARNING: %s", warn.Rule)
		if warn.URL != "" {
			fmt.Fprintf(&b, " - %s", warn.URL)
		}
		fmt.Fprintf(&b, "\n%s\n", warn.Detail)
		PrintSource(&b, name, src, warn.Location)
	}
	io.WriteString(w, b.String())
}

// PrintSummary writes the warnings at the end of a build, as buildx lists
// them under its progress: one line each.
func PrintSummary(w io.Writer, warnings []Warning) {
	if len(warnings) == 0 {
		return
	}
	var b strings.Builder
	if len(warnings) == 1 {
		b.WriteString("\n 1 warning found (use kiln build --check to expand):\n")
	} else {
		fmt.Fprintf(&b, "\n %d warnings found (use kiln build --check to expand):\n", len(warnings))
	}
	for _, warn := range warnings {
		fmt.Fprintf(&b, " - %s\n", warn.Short())
	}
	io.WriteString(w, b.String())
}

// PrintSource writes BuildKit's excerpt of the lines loc covers: the
// file name and first line, then the lines with ">>>" marks and a little
// context (more around a single line than around a range).
func PrintSource(w io.Writer, name string, src []byte, loc []bkparser.Range) {
	if len(loc) == 0 {
		return
	}
	lines := strings.Split(string(src), "\n")
	first, last := loc[0].Start.Line, 0
	for _, r := range loc {
		first = min(first, r.Start.Line)
		last = max(last, r.Start.Line, r.End.Line)
	}
	if first < 1 || first > len(lines) {
		return
	}
	last = min(last, len(lines))
	// BuildKit widens the window alternately up and down until it has
	// taken its budget of steps (4 for one line, 2 for a range); a step
	// that cannot move still counts.
	budget := 2
	if first == last {
		budget = 4
	}
	from, to := first, last
	for spent := 0; spent < budget; spent++ {
		if from > 1 {
			from--
			spent++
		}
		if to != len(lines) {
			to++
			spent++
		}
	}
	marked := func(n int) bool {
		for _, r := range loc {
			if r.Start.Line <= n && max(r.Start.Line, r.End.Line) >= n {
				return true
			}
		}
		return false
	}
	fmt.Fprintf(w, "%s:%d\n--------------------\n", name, first)
	for n := from; n <= to; n++ {
		mark := "   "
		if marked(n) {
			mark = ">>>"
		}
		fmt.Fprintf(w, " %3d | %s %s\n", n, mark, lines[n-1])
	}
	io.WriteString(w, "--------------------\n")
}
