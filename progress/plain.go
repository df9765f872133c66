package progress

import (
	"fmt"
	"io"
	"time"
)

// NewPlain returns BuildKit's plain layout on w: "#N NAME", the step's
// output as "#N 0.123 line", then "#N DONE 1.2s", "#N CACHED" or
// "#N ERROR: …". Lines of parallel steps interleave, but each line is
// written whole, so the log greps well by "#N ".
func NewPlain(w io.Writer) Printer { return newPrinter(nil, newPlainView(w)) }

// Discard shows nothing.
var Discard Printer = newPrinter(nil)

type plainView struct {
	w io.Writer
	// lastShown throttles byte counts to one line a second per transfer:
	// a CI log of a 1 GB pull should not have a million lines.
	lastShown map[*transfer]time.Time
	complete  map[*transfer]bool
}

func newPlainView(w io.Writer) *plainView {
	if w == nil {
		w = io.Discard
	}
	return &plainView{w: w, lastShown: map[*transfer]time.Time{}, complete: map[*transfer]bool{}}
}

func (v *plainView) start(s *step) { fmt.Fprintf(v.w, "#%d %s\n", s.n, s.name) }

func (v *plainView) write(*step, []byte) {}

func (v *plainView) line(s *step, l string) {
	fmt.Fprintf(v.w, "#%d %.3f %s\n", s.n, s.p.now().Sub(s.start).Seconds(), l)
}

func (v *plainView) transfer(s *step, t *transfer) {
	now := s.p.now()
	complete := t.total > 0 && t.current >= t.total
	if v.complete[t] {
		return
	}
	last, seen := v.lastShown[t]
	if !seen {
		// a transfer that completes within a second takes one line
		v.lastShown[t] = now
		if !complete {
			return
		}
	}
	if seen && !complete && now.Sub(last) < time.Second {
		return
	}
	v.lastShown[t] = now
	done := ""
	if complete {
		v.complete[t] = true
		done = " done"
	}
	fmt.Fprintf(v.w, "#%d %s %s %.1fs%s\n", s.n, t.id, transferText(t), now.Sub(s.start).Seconds(), done)
}

func (v *plainView) end(s *step) {
	for _, t := range s.transfers {
		// one of unknown size is over when its step is
		if s.state == done && !v.complete[t] {
			fmt.Fprintf(v.w, "#%d %s %s %.1fs done\n", s.n, t.id, transferText(t), s.elapsed().Seconds())
		}
		delete(v.lastShown, t)
		delete(v.complete, t)
	}
	switch s.state {
	case cached:
		fmt.Fprintf(v.w, "#%d CACHED\n", s.n)
	case done:
		fmt.Fprintf(v.w, "#%d DONE %.1fs\n", s.n, s.elapsed().Seconds())
	case failed:
		fmt.Fprintf(v.w, "#%d ERROR: %v\n", s.n, s.err)
	case canceled:
		fmt.Fprintf(v.w, "#%d CANCELED\n", s.n)
	}
}

func (v *plainView) summary(st Stats, sum Summary) {
	fmt.Fprintln(v.w)
	for _, l := range summaryLines(st, sum) {
		fmt.Fprintln(v.w, l)
	}
}

func (v *plainView) message(l string) { fmt.Fprintln(v.w, l) }

func (v *plainView) close() error { return nil }
