package progress

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// TTYOptions tune the live view.
type TTYOptions struct {
	// Size returns the terminal's columns and rows; nil or zeros mean 80x24.
	Size func() (width, height int)
	// Color marks finished steps blue, failed ones red and output faint.
	Color bool
	// Refresh is how often the view is redrawn; 0 means 100ms.
	Refresh time.Duration
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// NewTTY returns the live view for a terminal w, like buildx's: a header
// with the build's time, one line per step with its time, the last lines
// of output under each running step, redrawn in place until the build
// ends; then the whole list of steps and the summary stay on the screen.
func NewTTY(w io.Writer, o TTYOptions) Printer {
	v := newTTYView(w, o)
	p := newPrinter(o.Now, v)
	v.attach(p)
	v.run()
	return p
}

// ttyTail is how many output lines a running step shows.
const ttyTail = 6

type ttyView struct {
	w       io.Writer
	o       TTYOptions
	p       *printer
	lines   int  // lines of the last frame, to go back up over
	dirty   bool // something changed since the last frame
	stopped bool
	stop    chan struct{}
}

func newTTYView(w io.Writer, o TTYOptions) *ttyView {
	if o.Refresh <= 0 {
		o.Refresh = 100 * time.Millisecond
	}
	return &ttyView{w: w, o: o, stop: make(chan struct{})}
}

func (v *ttyView) attach(p *printer) { v.p = p }

// run redraws on a timer rather than on every event: a step printing
// thousands of lines a second must not make the terminal the bottleneck.
func (v *ttyView) run() {
	go func() {
		t := time.NewTicker(v.o.Refresh)
		defer t.Stop()
		for {
			select {
			case <-v.stop:
				return
			case <-t.C:
				v.p.mu.Lock()
				if !v.stopped && (v.dirty || v.anyRunning()) {
					v.draw(false)
				}
				v.p.mu.Unlock()
			}
		}
	}()
}

func (v *ttyView) anyRunning() bool {
	for _, s := range v.p.steps {
		if s.state == running {
			return true
		}
	}
	return false
}

func (v *ttyView) start(*step)                 { v.dirty = true }
func (v *ttyView) write(*step, []byte)         {}
func (v *ttyView) line(*step, string)          { v.dirty = true }
func (v *ttyView) transfer(*step, *transfer)   { v.dirty = true }
func (v *ttyView) end(*step)                   { v.dirty = true }
func (v *ttyView) summary(st Stats, s Summary) { v.finish(summaryLines(st, s)) }
func (v *ttyView) close() error                { v.finish(nil); return nil }

// message prints l where the live view was and draws the view again
// below it: messages scroll up with the terminal, the view stays last.
func (v *ttyView) message(l string) {
	var b strings.Builder
	if v.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\r\x1b[J", v.lines)
	}
	b.WriteString(printable(l) + "\n")
	io.WriteString(v.w, b.String())
	v.lines = 0
	if !v.stopped {
		v.draw(false)
	}
}

// finish draws the last frame, all steps and no output, and leaves it on
// the screen with the summary below. Called with the printer's lock held;
// the ticker goroutine sees stopped and draws no more.
func (v *ttyView) finish(after []string) {
	if v.stopped {
		return
	}
	v.stopped = true
	close(v.stop)
	v.draw(true)
	var b strings.Builder
	for _, l := range after {
		b.WriteString(l + "\n")
	}
	io.WriteString(v.w, b.String())
}

func (v *ttyView) size() (int, int) {
	w, h := 80, 24
	if v.o.Size != nil {
		if sw, sh := v.o.Size(); sw > 0 && sh > 0 {
			w, h = sw, sh
		}
	}
	return w, h
}

const (
	colorDone   = "\x1b[34m"
	colorError  = "\x1b[31m"
	colorCancel = "\x1b[33m"
	colorFaint  = "\x1b[2m"
	colorReset  = "\x1b[0m"
)

// block is a step's lines in a frame.
type block struct {
	s    *step
	head string
	tail []string
}

// draw writes a frame over the previous one in a single write. A frame
// never has more lines than the terminal: the cursor cannot go back up
// over lines that scrolled away.
func (v *ttyView) draw(final bool) {
	v.dirty = false
	width, height := v.size()
	p := v.p
	finished := 0
	var blocks []block
	for _, s := range p.steps {
		if s.state != running {
			finished++
		}
		b := block{s: s, head: v.stepLine(s, width, final)}
		if s.state == running && !final {
			b.tail = v.tail(s, width)
		}
		blocks = append(blocks, b)
	}
	status := ""
	if final {
		switch {
		case p.finished && p.stats.Failed == 0 && finished == len(p.steps):
			status = " FINISHED"
		case p.stats.Failed > 0:
			status = " FAILED"
		default:
			status = " CANCELED"
		}
	}
	header := fmt.Sprintf("[+] Building %.1fs (%d/%d)%s", p.now().Sub(p.start).Seconds(), finished, len(p.steps), status)
	if !final {
		blocks = fit(blocks, height-2) // the header, and a line for the cursor
	}

	var out strings.Builder
	if v.lines > 0 {
		fmt.Fprintf(&out, "\x1b[%dA\r", v.lines)
	}
	n := 0
	put := func(l, color string) {
		if v.o.Color && color != "" {
			l = color + l + colorReset
		}
		out.WriteString(l + "\x1b[K\n")
		n++
	}
	put(clip(header, width), "")
	for _, b := range blocks {
		color := ""
		switch b.s.state {
		case done, cached:
			color = colorDone
		case failed:
			color = colorError
		case canceled:
			color = colorCancel
		}
		put(b.head, color)
		for _, l := range b.tail {
			put(l, colorFaint)
		}
	}
	if n < v.lines {
		out.WriteString("\x1b[J") // the last frame was longer
	}
	v.lines = n
	io.WriteString(v.w, out.String())
}

// fit drops lines until the frame has at most budget lines: first the
// oldest finished steps, then output lines of the running ones, then the
// oldest running steps. What is cut stays in the log directory.
func fit(blocks []block, budget int) []block {
	if budget < 1 {
		budget = 1
	}
	count := func() int {
		n := 0
		for _, b := range blocks {
			n += 1 + len(b.tail)
		}
		return n
	}
	for count() > budget {
		i := -1
		for j, b := range blocks {
			if b.s.state != running {
				i = j
				break
			}
		}
		if i < 0 {
			break
		}
		blocks = append(blocks[:i:i], blocks[i+1:]...)
	}
	for count() > budget {
		longest := -1
		for j, b := range blocks {
			if len(b.tail) > 0 && (longest < 0 || len(b.tail) > len(blocks[longest].tail)) {
				longest = j
			}
		}
		if longest < 0 {
			break
		}
		blocks[longest].tail = blocks[longest].tail[1:]
	}
	for count() > budget && len(blocks) > 1 {
		blocks = blocks[1:]
	}
	return blocks
}

// stepLine is " => NAME  [bytes]  1.2s", the time flush right.
func (v *ttyView) stepLine(s *step, width int, final bool) string {
	name := printable(strings.ReplaceAll(s.name, "\n", " "))
	switch {
	case s.state == cached:
		name = "CACHED " + name
	case s.state == failed:
		name = "ERROR " + name
	case s.state == canceled:
		name = "CANCELED " + name
	case s.state == running && final:
		name = "CANCELED " + name
	}
	d := s.elapsed()
	if s.state == cached {
		d = 0
	}
	timer := fmt.Sprintf(" %.1fs", d.Seconds())
	status := ""
	if s.state == running && len(s.transfers) > 0 {
		var cur, total int64
		unknown := false
		for _, t := range s.transfers {
			cur += t.current
			total += t.total
			unknown = unknown || t.total <= 0
		}
		if unknown {
			total = 0 // one size unknown: so is the sum
		}
		status = " " + transferText(&transfer{current: cur, total: total})
	}
	const pfx = " => "
	left := width - 1 - len(pfx) - len(timer) - len(status)
	if left < 12 { // too narrow for the bytes: keep the name readable
		status = ""
		left = width - 1 - len(pfx) - len(timer)
	}
	name = clip(name, left)
	pad := left - utf8.RuneCountInString(name)
	return pfx + name + status + strings.Repeat(" ", max(pad, 0)) + timer
}

// tail is a running step's last output lines, " => => # line", including
// a line still being written (a progress bar redrawn with \r).
func (v *ttyView) tail(s *step, width int) []string {
	lines := s.tail
	if len(lines) > ttyTail {
		lines = lines[len(lines)-ttyTail:]
	}
	lines = append([]string(nil), lines...)
	if len(s.partial) > 0 {
		lines = append(lines, string(s.partial))
		if len(lines) > ttyTail {
			lines = lines[1:]
		}
	}
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		out = append(out, clip(" => => # "+printable(l), width-1))
	}
	return out
}

var escapes = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]`)

// printable is what is left of l after its last carriage return, without
// escape sequences or control characters: the step's output must not
// move the cursor of the view.
func printable(l string) string {
	if i := strings.LastIndexByte(l, '\r'); i >= 0 {
		l = l[i+1:]
	}
	l = escapes.ReplaceAllString(l, "")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return r
	}, l)
}

// clip cuts s to n runes: a line wider than the terminal would wrap and
// throw off the count of lines to go back up over.
func clip(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}
