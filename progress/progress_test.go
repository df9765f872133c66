package progress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// clock is a fake time that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// script drives a printer the way the planner and the command do; tick
// marks where the test's live view draws a frame.
type script func(p Printer, c *clock, tick func())

var scripts = []struct {
	name string
	run  script
}{
	{"linear", func(p Printer, c *clock, tick func()) {
		from := p.Step("[1/4] FROM registry.example/busybox:latest")
		c.advance(200 * time.Millisecond)
		from.Done()
		tick()
		run := p.Step("[2/4] RUN make")
		c.advance(10 * time.Millisecond)
		fmt.Fprint(run, "compiling a.c\ncompiling b")
		tick()
		c.advance(1500 * time.Millisecond)
		fmt.Fprint(run, ".c\n\tlinking\r\n")
		fmt.Fprint(run, "done, no newline")
		tick()
		c.advance(300 * time.Millisecond)
		run.Done()
		cp := p.Step("[3/4] COPY app /usr/bin/app")
		cp.Cached()
		wd := p.Step("[4/4] WORKDIR /srv")
		c.advance(50 * time.Millisecond)
		wd.Done()
		tick()
		Summarize(p, Summary{ImageID: "sha256:1111", Digest: "sha256:2222", Size: 2_345_678, Layers: 3, Names: []string{"app:1.0"}})
	}},
	{"parallel", func(p Printer, c *clock, tick func()) {
		a := p.Step("[build 2/3] RUN go build")
		b := p.Step("[stage-1 2/2] RUN apk add curl")
		for i := range 8 {
			c.advance(100 * time.Millisecond)
			fmt.Fprintf(a, "a line %d\n", i)
			fmt.Fprintf(b, "b line %d\n", i)
			if i%3 == 0 {
				tick()
			}
		}
		b.Done()
		tick()
		fmt.Fprintln(p.(interface{ Messages() io.Writer }).Messages(), "a note from outside the steps")
		c.advance(time.Second)
		a.Done()
		Summarize(p, Summary{ImageID: "sha256:3333", Layers: 2})
	}},
	{"failure", func(p Printer, c *clock, tick func()) {
		ok := p.Step("[1/3] RUN echo before")
		fmt.Fprintln(ok, "before")
		c.advance(20 * time.Millisecond)
		ok.Done()
		bad := p.Step("[2/3] RUN echo some output && exit 3")
		other := p.Step("[other 1/1] RUN sleep 10")
		fmt.Fprintln(bad, "some output")
		tick()
		c.advance(700 * time.Millisecond)
		bad.Fail(errors.New(`process "/bin/sh -c echo some output && exit 3" did not complete successfully: exit code: 3`))
		bad.Done() // ignored: the step already ended
		// the failure cancels the steps of the other stages
		other.Fail(fmt.Errorf("running: %w", context.Canceled))
		Close(p)
	}},
	{"transfer", func(p Printer, c *clock, tick func()) {
		pull := p.Step("[1/2] FROM registry.example/debian:bookworm")
		l1 := NewReader(pull, "sha256:aaaa", strings.NewReader(strings.Repeat("x", 3000)), 3000)
		buf := make([]byte, 1000)
		for range 3 {
			c.advance(600 * time.Millisecond)
			l1.Read(buf)
			tick()
		}
		l1.Read(buf) // EOF
		Transfer(pull, "sha256:bbbb", 5_000_000, 0)
		tick()
		pull.Done()
		Summarize(p, Summary{ImageID: "sha256:4444", Layers: 2, Size: 5_003_000})
	}},
}

// TestViews runs every script through every view and compares what they
// wrote with testdata/SCRIPT.VIEW.golden.
func TestViews(t *testing.T) {
	for _, sc := range scripts {
		t.Run(sc.name+"/plain", func(t *testing.T) {
			c := newClock()
			var buf bytes.Buffer
			p := newPrinter(c.now, newPlainView(&buf))
			sc.run(p, c, func() {})
			golden(t, sc.name+".plain", buf.String())
		})
		t.Run(sc.name+"/rawjson", func(t *testing.T) {
			c := newClock()
			var buf bytes.Buffer
			p := newPrinter(c.now, newJSONView(&buf, c.now, "BUILD", "/logs/BUILD"))
			sc.run(p, c, func() {})
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var e Event
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Errorf("line %q does not decode: %v", l, err)
				}
			}
			golden(t, sc.name+".rawjson", buf.String())
		})
		t.Run(sc.name+"/tty", func(t *testing.T) {
			c := newClock()
			var buf bytes.Buffer
			v := newTTYView(&buf, TTYOptions{Size: func() (int, int) { return 64, 12 }, Now: c.now})
			p := newPrinter(c.now, v)
			v.attach(p) // no run(): frames are drawn at the script's ticks only
			tick := func() {
				p.mu.Lock()
				v.draw(false)
				p.mu.Unlock()
				buf.WriteString("<frame>\n")
			}
			sc.run(p, c, tick)
			golden(t, sc.name+".tty", strings.ReplaceAll(buf.String(), "\x1b", "␛"))
		})
		t.Run(sc.name+"/logs", func(t *testing.T) {
			c := newClock()
			logs := t.TempDir()
			d, err := New(Config{Mode: "quiet", LogsDir: logs, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			sc.run(d, c, func() {})
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if filepath.Dir(d.LogDir) != logs || filepath.Base(d.LogDir) != d.ID {
				t.Errorf("log dir %s, want %s/%s", d.LogDir, logs, d.ID)
			}
			golden(t, sc.name+".logs", dirText(t, d.LogDir))
		})
	}
}

// dirText is every file of dir, by name, with its contents.
func dirText(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "== %s\n%s", e.Name(), data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			b.WriteString("\n(no newline at end)\n")
		}
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it):\n--- want\n%s\n--- got\n%s", file, want, got)
	}
}

// TestFit checks that a frame never outgrows the terminal, dropping
// finished steps before the output of running ones.
func TestFit(t *testing.T) {
	mk := func(st state, tail int) block {
		return block{s: &step{state: st}, tail: make([]string, tail)}
	}
	tests := []struct {
		name   string
		blocks []block
		budget int
		want   []int // the tail length of each block left, -1 for none
	}{
		{"fits", []block{mk(done, 0), mk(running, 3)}, 10, []int{-1, 3}},
		{"drops finished first", []block{mk(done, 0), mk(cached, 0), mk(running, 3)}, 5, []int{-1, 3}},
		{"then output", []block{mk(done, 0), mk(running, 6), mk(running, 2)}, 6, []int{2, 2}},
		{"then running steps", []block{mk(running, 0), mk(running, 0), mk(running, 0)}, 2, []int{0, 0}},
		{"never below one", []block{mk(running, 4)}, 0, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fit(tt.blocks, tt.budget)
			var tails []int
			n := 0
			for _, b := range got {
				n += 1 + len(b.tail)
				if b.s.state == running {
					tails = append(tails, len(b.tail))
				} else {
					tails = append(tails, -1)
				}
			}
			if fmt.Sprint(tails) != fmt.Sprint(tt.want) {
				t.Errorf("fit left %v, want %v", tails, tt.want)
			}
			if n > max(tt.budget, 1) {
				t.Errorf("%d lines, budget %d", n, tt.budget)
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"10%\r50%\r100%", "100%"},
		{"\x1b[31mred\x1b[0m text", "red text"},
		{"tab\there\x07", "tab here"},
		{"héllo ✓", "héllo ✓"},
	}
	for _, tt := range tests {
		if got := printable(tt.in); got != tt.want {
			t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{{0, "0B"}, {999, "999B"}, {1000, "1.0kB"}, {2_345_678, "2.3MB"}, {5e12, "5.0TB"}}
	for _, tt := range tests {
		if got := HumanBytes(tt.n); got != tt.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// TestPrune keeps the newest build directories and this build's.
func TestPrune(t *testing.T) {
	logs := t.TempDir()
	for i := range 5 {
		if err := os.Mkdir(filepath.Join(logs, fmt.Sprintf("2026010%d-000000-abcdef", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := pruneLogs(logs, 3); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(logs)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	want := []string{"20260102-000000-abcdef", "20260103-000000-abcdef", "20260104-000000-abcdef"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("kept %v, want %v", names, want)
	}
}

// TestStepLog finds the failed step's log through wrapping.
func TestStepLog(t *testing.T) {
	d, err := New(Config{Mode: "quiet", LogsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Step("[1/2] FROM x").Done()
	s := d.Step("[2/2] RUN false")
	cause := errors.New("exit code: 1")
	s.Fail(cause)
	wrapped := fmt.Errorf("Dockerfile:2: %w", cause)
	if got, want := d.StepLog(wrapped), StepLogPath(d.LogDir, 2); got != want {
		t.Errorf("StepLog = %q, want %q", got, want)
	}
	if got := d.StepName(wrapped); got != "[2/2] RUN false" {
		t.Errorf("StepName = %q", got)
	}
	if got := d.StepLog(errors.New("other")); got != "" {
		t.Errorf("StepLog of an unrelated error = %q, want none", got)
	}
}

// TestLongLine cuts output without newlines into pieces, and keeps it
// whole in the log file.
func TestLongLine(t *testing.T) {
	var buf bytes.Buffer
	d, err := New(Config{Mode: "plain", Out: &buf, LogsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := d.Step("[1/1] RUN dump")
	big := strings.Repeat("x", 2*maxLine+10)
	for i := 0; i < len(big); i += 1000 {
		fmt.Fprint(s, big[i:min(i+1000, len(big))])
	}
	s.Done()
	d.Close()
	if got := len(s.Tail()); got != 3 {
		t.Errorf("%d lines, want 3: two cut at %d bytes and the rest", got, maxLine)
	}
	data, err := os.ReadFile(StepLogPath(d.LogDir, 1))
	if err != nil || string(data) != big {
		t.Errorf("log file has %d bytes, want %d (%v)", len(data), len(big), err)
	}
}

// TestConcurrent writes from many steps at once (run with -race): every
// line arrives whole.
func TestConcurrent(t *testing.T) {
	var buf bytes.Buffer
	p := NewPlain(&buf)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := p.Step(fmt.Sprintf("step %d", i))
			for j := range 100 {
				fmt.Fprintf(s, "step %d line %d\n", i, j)
			}
			s.Done()
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 8*102 {
		t.Errorf("%d lines, want %d", len(lines), 8*102)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "#") {
			t.Errorf("line cut: %q", l)
		}
	}
}

// A build that ran nothing (a no-op rebuild: the base resolved, every
// step cached) makes no log directory and prunes none; one that fails
// keeps its transcript even when no step wrote anything.
func TestLogsOnlyWhenSomethingRan(t *testing.T) {
	for _, tt := range []struct {
		name string
		run  func(p Printer)
		kept bool
	}{
		{"no-op rebuild", func(p Printer) {
			from := p.Step("[1/2] FROM registry.example/busybox:latest")
			from.Done()
			p.Step("[2/2] COPY . /data/").Cached()
			Summarize(p, Summary{ImageID: "sha256:1111"})
		}, false},
		{"failure without output", func(p Printer) {
			p.Step("[1/1] COPY missing /").Fail(errors.New("missing: not found"))
		}, true},
		{"build failed outside a step", func(p Printer) {
			p.Step("[1/1] FROM registry.example/busybox:latest").Done()
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := t.TempDir()
			old := filepath.Join(logs, "20200101-000000-000000")
			for i := 0; i < KeepLogs+1; i++ {
				if err := os.Mkdir(fmt.Sprintf("%s%d", old, i), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			d, err := New(Config{Mode: "quiet", LogsDir: logs})
			if err != nil {
				t.Fatal(err)
			}
			tt.run(d)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			_, err = os.Stat(filepath.Join(d.LogDir, "build.log"))
			if kept := err == nil; kept != tt.kept {
				t.Errorf("build.log kept: %v, want %v", kept, tt.kept)
			}
			ents, err := os.ReadDir(logs)
			if err != nil {
				t.Fatal(err)
			}
			if want := KeepLogs + 1; !tt.kept && len(ents) != want {
				t.Errorf("%d log directories after a build that kept none, want the %d there were", len(ents), want)
			}
		})
	}
}
