// Package progress shows what a build is doing: the steps as they start,
// their output, how each ended and, at the end, a summary of the build.
//
// The planner sees only Printer and Step. The optional interfaces
// (Summarizer, io.Closer on a Printer; Transferrer on a Step) are for
// whoever has more to say: the command prints the summary, a pull or an
// export reports bytes.
package progress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Printer receives a build's progress. Implementations are safe for
// concurrent use: parallel stages report at the same time.
type Printer interface {
	// Step announces a step; name is its "[stage i/n] INSTRUCTION" title.
	Step(name string) Step
}

// Step is one step's progress; writes are the step's output. The first
// of Cached, Done and Fail ends the step; later calls are ignored.
type Step interface {
	io.Writer
	Cached()
	Done()
	Fail(err error)
	// Tail returns the last lines of output, for error reports.
	Tail() []string
}

// Summarizer is implemented by printers that end a successful build with
// a summary. Summary also ends the live view: call it after the last step.
type Summarizer interface {
	Summary(Summary)
}

// Summary describes the image a build produced.
type Summary struct {
	ImageID string   // the config digest, "sha256:…"
	Digest  string   // the manifest digest
	Size    int64    // bytes of the compressed layers, 0 when unknown
	Layers  int      // layers in the image
	Names   []string // the names it was given (-t)
}

// Transferrer is implemented by steps that show bytes moved, for pulls,
// pushes and exports. id names one transfer within the step (a layer
// digest, a file); total is 0 when unknown.
type Transferrer interface {
	Transfer(id string, current, total int64)
}

// Summarize gives p the summary when it shows one.
func Summarize(p Printer, s Summary) {
	if sp, ok := p.(Summarizer); ok {
		sp.Summary(s)
	}
}

// Close ends p's display when it has one to end: the live view draws its
// last frame, log files are closed. It returns the first error met writing
// the build's logs.
func Close(p Printer) error {
	if c, ok := p.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Transfer reports bytes moved by step s, when s shows them.
func Transfer(s Step, id string, current, total int64) {
	if t, ok := s.(Transferrer); ok {
		t.Transfer(id, current, total)
	}
}

// NewReader reports the bytes read from r as transfer id of step s, whose
// size is total (0 when unknown).
func NewReader(s Step, id string, r io.Reader, total int64) io.Reader {
	t, ok := s.(Transferrer)
	if !ok {
		return r
	}
	t.Transfer(id, 0, total)
	return &countingReader{r: r, t: t, id: id, total: total}
}

type countingReader struct {
	r        io.Reader
	t        Transferrer
	id       string
	n, total int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if n > 0 || err == io.EOF {
		c.t.Transfer(c.id, c.n, c.total)
	}
	return n, err
}

// view is one way of showing the build: the terminal, a JSON stream, the
// log directory. Its methods are called with the printer's lock held, in
// the order things happened, so views keep no locks of their own.
type view interface {
	start(s *step)
	write(s *step, b []byte) // raw output, as the step wrote it
	line(s *step, l string)  // the same output, one whole line at a time
	transfer(s *step, t *transfer)
	end(s *step) // s.state says how
	summary(st Stats, s Summary)
	message(l string) // a line that belongs to no step
	close() error
}

// Stats counts the steps of a build.
type Stats struct {
	Duration          time.Duration
	Steps, Cached     int
	Done, Failed, Run int // Run is Done+Failed: the steps that executed
	Canceled          int
}

type state int

const (
	running state = iota
	cached
	done
	failed
	canceled // stopped because the build was: interrupted, or another step failed
)

// printer numbers the steps, splits their output into lines and hands
// every event to its views.
type printer struct {
	mu       sync.Mutex
	now      func() time.Time
	start    time.Time
	views    []view
	steps    []*step
	finished bool
	stats    Stats
}

func newPrinter(now func() time.Time, views ...view) *printer {
	if now == nil {
		now = time.Now
	}
	return &printer{now: now, start: now(), views: views}
}

func (p *printer) Step(name string) Step { return p.step(name, StepInfo{}) }

func (p *printer) step(name string, info StepInfo) *step {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &step{p: p, n: len(p.steps) + 1, name: name, info: info, start: p.now()}
	p.steps = append(p.steps, s)
	p.stats.Steps++
	for _, v := range p.views {
		v.start(s)
	}
	return s
}

// Summary ends the display with the build's summary.
func (p *printer) Summary(sum Summary) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	st := p.stats
	st.Duration = p.now().Sub(p.start)
	for _, v := range p.views {
		v.summary(st, sum)
	}
}

// Messages returns a writer for what the build has to say outside any
// step (a push's "pushed NAME@DIGEST", a warning): each line shows above
// the live view, in the plain log unprefixed, as a rawjson "message".
// Writing to stderr directly while the live view runs would be drawn over.
func (p *printer) Messages() io.Writer { return &messages{p: p} }

type messages struct {
	p       *printer
	mu      sync.Mutex
	partial []byte
}

func (m *messages) Write(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.partial = append(m.partial, b...)
	for {
		i := bytes.IndexByte(m.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		l := strings.TrimSuffix(string(m.partial[:i]), "\r")
		m.partial = m.partial[i+1:]
		m.p.mu.Lock()
		for _, v := range m.p.views {
			v.message(l)
		}
		m.p.mu.Unlock()
	}
}

// Close ends the display; a build that failed ends here without summary.
func (p *printer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished = true
	var first error
	for _, v := range p.views {
		if err := v.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// step is one step's output and outcome.
type step struct {
	p          *printer
	n          int
	name       string
	info       StepInfo
	start, end time.Time
	state      state
	err        error
	partial    []byte   // an incomplete last line
	tail       []string // the last lines, for error reports
	transfers  []*transfer
}

// transfer is the bytes moved so far by one pull, push or export.
type transfer struct {
	id             string
	current, total int64
}

const tailLines = 20

func (s *step) Write(b []byte) (int, error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	for _, v := range s.p.views {
		v.write(s, b)
	}
	s.partial = append(s.partial, b...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	// output without newlines (a progress bar redrawn with \r, a binary
	// dump) must not grow without bound: it is shown in pieces
	for len(s.partial) >= maxLine {
		s.line(string(s.partial[:maxLine]))
		s.partial = s.partial[maxLine:]
	}
	return len(b), nil
}

// maxLine is the longest line shown whole; the log file has it all.
const maxLine = 16 << 10

func (s *step) line(l string) {
	l = strings.TrimSuffix(l, "\r")
	s.tail = append(s.tail, l)
	if len(s.tail) > tailLines {
		s.tail = s.tail[len(s.tail)-tailLines:]
	}
	for _, v := range s.p.views {
		v.line(s, l)
	}
}

// Tail returns the last lines the step printed.
func (s *step) Tail() []string {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return append([]string(nil), s.tail...)
}

func (s *step) Transfer(id string, current, total int64) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if s.state != running {
		return
	}
	var t *transfer
	for _, x := range s.transfers {
		if x.id == id {
			t = x
		}
	}
	if t == nil {
		t = &transfer{id: id}
		s.transfers = append(s.transfers, t)
	}
	t.current, t.total = current, total
	for _, v := range s.p.views {
		v.transfer(s, t)
	}
}

func (s *step) Cached() { s.finish(cached, nil) }
func (s *step) Done()   { s.finish(done, nil) }
func (s *step) Fail(err error) {
	if err == nil {
		err = fmt.Errorf("step failed without an error")
	}
	if errors.Is(err, context.Canceled) {
		s.finish(canceled, err)
		return
	}
	s.finish(failed, err)
}

func (s *step) finish(st state, err error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if s.state != running {
		return
	}
	// the output's last line may lack its newline: it is still output
	if len(s.partial) > 0 {
		s.line(string(s.partial))
		s.partial = nil
	}
	s.state, s.err, s.end = st, err, s.p.now()
	switch st {
	case cached:
		s.p.stats.Cached++
	case done:
		s.p.stats.Done++
		s.p.stats.Run++
	case failed:
		s.p.stats.Failed++
		s.p.stats.Run++
	case canceled:
		s.p.stats.Canceled++
	}
	for _, v := range s.p.views {
		v.end(s)
	}
}

// elapsed is how long s ran, or has been running.
func (s *step) elapsed() time.Duration {
	if s.state == running {
		return s.p.now().Sub(s.start)
	}
	return s.end.Sub(s.start)
}

// summaryLines is the summary as the plain and tty views print it.
func summaryLines(st Stats, s Summary) []string {
	var b strings.Builder
	fmt.Fprintf(&b, "Built in %.1fs: %d %s", st.Duration.Seconds(), st.Steps, plural(st.Steps, "step", "steps"))
	if st.Steps > 0 {
		fmt.Fprintf(&b, " (%d cached, %d run)", st.Cached, st.Run)
	}
	if s.ImageID == "" {
		return []string{b.String()}
	}
	fmt.Fprintf(&b, ", %d %s", s.Layers, plural(s.Layers, "layer", "layers"))
	if s.Size > 0 {
		fmt.Fprintf(&b, ", %s", HumanBytes(s.Size))
	}
	out := []string{b.String(), "image " + s.ImageID}
	if s.Digest != "" {
		out = append(out, "manifest "+s.Digest)
	}
	if len(s.Names) > 0 {
		out = append(out, "named "+strings.Join(s.Names, ", "))
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// HumanBytes writes n in decimal units, as docker does: "12.3MB".
func HumanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f%s", f, []string{"kB", "MB", "GB", "TB", "PB"}[i])
}

// transferText is "12.3MB / 45.6MB", or "12.3MB" when the total is unknown.
func transferText(t *transfer) string {
	if t.total > 0 {
		return HumanBytes(t.current) + " / " + HumanBytes(t.total)
	}
	return HumanBytes(t.current)
}
