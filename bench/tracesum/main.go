// Command tracesum sums the spans of kiln build --trace files per phase:
// how many, how long in all, how long on average, longest first. It is the
// text form of what ui.perfetto.dev shows, for a benchmark report:
//
//	go run ./bench/tracesum [-top N] TRACE.json...
//
// Step spans ("[2/4] RUN …") are summed as one phase, "step", so that the
// phases of a step (sandbox start, commit, …) read as parts of it.
package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/kiln-build/kiln/trace"
)

func main() {
	top := flag.Int("top", 0, "print only the N longest phases (0: all)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: tracesum [-top N] TRACE.json... (files from kiln build --trace)")
		os.Exit(2)
	}
	if err := run(flag.Args(), *top, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tracesum:", err)
		os.Exit(1)
	}
}

type phase struct {
	name  string
	n     int
	total float64 // µs
	max   float64 // µs
}

func run(files []string, top int, w io.Writer) error {
	by := map[string]*phase{}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("reading trace: %w", err)
		}
		evs, err := trace.Parse(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, e := range evs {
			name := e.Name
			if strings.HasPrefix(name, "[") {
				name = "step"
			}
			p := by[name]
			if p == nil {
				p = &phase{name: name}
				by[name] = p
			}
			p.n++
			p.total += e.Dur
			p.max = max(p.max, e.Dur)
		}
	}
	list := make([]*phase, 0, len(by))
	for _, p := range by {
		list = append(list, p)
	}
	slices.SortFunc(list, func(a, b *phase) int {
		if c := cmp.Compare(b.total, a.total); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	if top > 0 && len(list) > top {
		list = list[:top]
	}
	fmt.Fprintf(w, "%-44s %6s %11s %10s %10s\n", "phase", "count", "total ms", "mean ms", "max ms")
	for _, p := range list {
		name := p.name
		if len(name) > 44 {
			name = name[:43] + "…"
		}
		fmt.Fprintf(w, "%-44s %6d %11.2f %10.2f %10.2f\n", name, p.n, p.total/1e3, p.total/1e3/float64(p.n), p.max/1e3)
	}
	return nil
}
