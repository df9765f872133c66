// Package progress shows what a build is doing: the steps as they start,
// their output, and how each ended.
package progress

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
)

// Printer receives a build's progress. Implementations are safe for
// concurrent use: parallel stages report at the same time.
type Printer interface {
	// Step announces a step; name is its "[stage i/n] INSTRUCTION" title.
	Step(name string) Step
}

// Step is one step's progress; writes are the step's output.
type Step interface {
	io.Writer
	Cached()
	Done()
	Fail(err error)
	// Tail returns the last lines of output, for error reports.
	Tail() []string
}

// NewPlain returns BuildKit's plain layout on w.
func NewPlain(w io.Writer) Printer { return newProgress(w) }

// Discard shows nothing.
var Discard Printer = newProgress(io.Discard)

// progress prints BuildKit's plain progress layout: "#N NAME", the step's
// output as "#N 0.123 line", then "#N DONE 1.2s", "#N CACHED" or "#N ERROR".
// Lines of parallel steps interleave, but each line is written whole.
type progress struct {
	mu sync.Mutex
	w  io.Writer
	n  int
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		w = io.Discard
	}
	return &progress{w: w}
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// step announces a step and returns its log.
func (p *progress) Step(name string) Step {
	p.mu.Lock()
	p.n++
	n := p.n
	fmt.Fprintf(p.w, "#%d %s\n", n, name)
	p.mu.Unlock()
	return &stepLog{p: p, n: n, start: time.Now()}
}

// stepLog is the output of one step; it is an io.Writer for the sandbox.
type stepLog struct {
	p     *progress
	n     int
	start time.Time
	mu    sync.Mutex
	buf   []byte   // an incomplete last line
	tail  []string // the last lines, for error reports
}

const tailLines = 20

func (s *stepLog) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, b...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.line(string(s.buf[:i]))
		s.buf = s.buf[i+1:]
	}
	return len(b), nil
}

func (s *stepLog) line(l string) {
	s.tail = append(s.tail, l)
	if len(s.tail) > tailLines {
		s.tail = s.tail[len(s.tail)-tailLines:]
	}
	s.p.printf("#%d %.3f %s\n", s.n, time.Since(s.start).Seconds(), l)
}

func (s *stepLog) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf) > 0 {
		s.line(string(s.buf))
		s.buf = nil
	}
}

// Tail returns the last lines the step printed.
func (s *stepLog) Tail() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tail...)
}

func (s *stepLog) Done() {
	s.flush()
	s.p.printf("#%d DONE %.1fs\n", s.n, time.Since(s.start).Seconds())
}

func (s *stepLog) Cached() {
	s.p.printf("#%d CACHED\n", s.n)
}

func (s *stepLog) Fail(err error) {
	s.flush()
	s.p.printf("#%d ERROR: %v\n", s.n, err)
}
