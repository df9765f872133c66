// Package trace records where a build's time goes, as a Chrome trace-event
// file (the JSON that chrome://tracing and ui.perfetto.dev open).
//
// Spans travel in the context: Start opens one as a child of the span ctx
// carries and returns a context carrying the new one. Without a Recorder in
// the context (no --trace), Start returns ctx unchanged and a nil *Span,
// whose methods do nothing: the disabled path costs a context lookup and
// allocates nothing, so call sites need no "if tracing" of their own.
//
// Lanes (trace "threads") are assigned automatically: a span goes on its
// parent's lane when the parent is the innermost open span there, and on a
// free lane otherwise, so spans that run at the same time (stages, steps of
// parallel stages, layer pulls) never overlap on one lane, and nesting on a
// lane is always proper. Every span also records its parent's id in its
// args, for tools that want the tree whatever the lane.
package trace

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Recorder collects the spans of one build. It is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu     sync.Mutex
	nextID int64
	lanes  [][]*Span // per lane, its open spans, innermost last
	names  []string  // per lane, the name of the span that first opened it
	done   []event
	open   map[*Span]struct{}
}

// New returns a Recorder whose time zero is now.
func New() *Recorder {
	return &Recorder{start: time.Now(), open: map[*Span]struct{}{}}
}

type recorderKey struct{}
type spanKey struct{}

// With returns ctx carrying r: Start under it records into r.
func With(ctx context.Context, r *Recorder) context.Context {
	if r == nil {
		return ctx
	}
	return context.WithValue(ctx, recorderKey{}, r)
}

// Enabled reports whether ctx carries a Recorder, for a call site that
// would otherwise compute a span argument for nothing.
func Enabled(ctx context.Context) bool {
	_, ok := ctx.Value(recorderKey{}).(*Recorder)
	return ok
}

// Span is one timed phase. A nil *Span (tracing off) is valid and does
// nothing.
type Span struct {
	r      *Recorder
	id     int64
	parent int64
	up     *Span // the parent span
	lane   int
	name   string
	begin  time.Duration
	args   []arg
	ended  bool
}

type arg struct {
	key string
	s   string
	n   int64
	num bool
}

// Start opens a span named name, a child of the span ctx carries, and
// returns a context carrying it. End it with (*Span).End, on every path.
func Start(ctx context.Context, name string) (context.Context, *Span) {
	r, ok := ctx.Value(recorderKey{}).(*Recorder)
	if !ok {
		return ctx, nil
	}
	parent, _ := ctx.Value(spanKey{}).(*Span)
	s := r.open1(name, parent)
	return context.WithValue(ctx, spanKey{}, s), s
}

func (r *Recorder) open1(name string, parent *Span) *Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Under the lock, as in End: a lane is handed on in time order.
	now := time.Since(r.start)
	r.nextID++
	s := &Span{r: r, id: r.nextID, name: name, begin: now, lane: -1}
	if parent != nil && parent.r != r {
		parent = nil
	}
	// Work that outlives the span that started it (a lazy image fetching
	// its blobs with the context it was resolved with) belongs to the
	// nearest span still open.
	for parent != nil && parent.ended {
		parent = parent.up
	}
	if parent != nil {
		s.parent, s.up = parent.id, parent
		if l := r.lanes[parent.lane]; len(l) > 0 && l[len(l)-1] == parent {
			s.lane = parent.lane
		}
	}
	if s.lane < 0 {
		// The lowest free lane: few lanes, and a root span on lane 0.
		for i, l := range r.lanes {
			if len(l) == 0 {
				s.lane = i
				break
			}
		}
		if s.lane < 0 {
			s.lane = len(r.lanes)
			r.lanes = append(r.lanes, nil)
			r.names = append(r.names, name)
		}
	}
	r.lanes[s.lane] = append(r.lanes[s.lane], s)
	r.open[s] = struct{}{}
	return s
}

// SetString records a string argument of the span (shown in the viewer's
// details of it).
func (s *Span) SetString(key, value string) {
	if s == nil {
		return
	}
	s.r.mu.Lock()
	s.args = append(s.args, arg{key: key, s: value})
	s.r.mu.Unlock()
}

// SetInt records a number argument of the span, e.g. "bytes".
func (s *Span) SetInt(key string, value int64) {
	if s == nil {
		return
	}
	s.r.mu.Lock()
	s.args = append(s.args, arg{key: key, n: value, num: true})
	s.r.mu.Unlock()
}

// SetError records that the span's phase failed, with err's text; nil err
// records nothing.
func (s *Span) SetError(err error) {
	if s == nil || err == nil {
		return
	}
	s.SetString("error", err.Error())
}

// End closes the span. Ending a span twice, or a nil one, does nothing.
func (s *Span) End() {
	if s == nil {
		return
	}
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.ended {
		return
	}
	r.close(s, time.Since(r.start), false)
}

// close records s as done at now; r.mu is held.
func (r *Recorder) close(s *Span, now time.Duration, unfinished bool) {
	s.ended = true
	delete(r.open, s)
	// Normally the innermost; a span ended out of order is taken out
	// wherever it is, so the lane's stack stays the open spans.
	l := r.lanes[s.lane]
	if i := slices.Index(l, s); i >= 0 {
		r.lanes[s.lane] = slices.Delete(l, i, i+1)
	}
	r.done = append(r.done, event{span: s, dur: now - s.begin, unfinished: unfinished})
}

type event struct {
	span       *Span
	dur        time.Duration
	unfinished bool
}

// WriteFile writes the trace to path (see Write).
func (r *Recorder) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing trace: %w", err)
	}
	if err := r.Write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing trace %s: %w", path, err)
	}
	return nil
}

// Write writes every span recorded so far as a Chrome trace-event JSON
// object. Spans still open (a failed or interrupted build) are written as
// ending now, with the argument "unfinished": true; they stay open, so a
// later Write shows them again.
func (r *Recorder) Write(w io.Writer) error {
	r.mu.Lock()
	now := time.Since(r.start)
	evs := slices.Clone(r.done)
	ends := make(map[*Span]time.Duration, len(evs))
	for _, e := range evs {
		ends[e.span] = e.span.begin + e.dur
	}
	for s := range r.open {
		// A span left open on an error path ends, at the latest, with
		// its ancestors that did end, so that it still nests in them.
		end := now
		for a := s.up; a != nil; a = a.up {
			if e, ok := ends[a]; ok {
				end = min(end, e)
			}
		}
		evs = append(evs, event{span: s, dur: max(0, end-s.begin), unfinished: true})
	}
	names := slices.Clone(r.names)
	// Args may still be appended to open spans: copy them under the lock.
	args := make([][]arg, len(evs))
	for i, e := range evs {
		args[i] = slices.Clone(e.span.args)
	}
	r.mu.Unlock()

	order := make([]int, len(evs))
	for i := range order {
		order[i] = i
	}
	// By start, parents (longer) first at equal starts: how viewers expect
	// nested complete events.
	slices.SortStableFunc(order, func(a, b int) int {
		ea, eb := evs[a], evs[b]
		if c := cmp.Compare(ea.span.begin, eb.span.begin); c != 0 {
			return c
		}
		if c := cmp.Compare(eb.dur, ea.dur); c != 0 {
			return c
		}
		return cmp.Compare(ea.span.id, eb.span.id)
	})

	bw := bufio.NewWriter(w)
	bw.WriteString(`{"displayTimeUnit":"ms","traceEvents":[`)
	bw.WriteString("\n")
	writeJSON(bw, map[string]any{"ph": "M", "pid": 1, "tid": 0, "name": "process_name", "args": map[string]any{"name": "kiln build"}})
	for i, n := range names {
		bw.WriteString(",\n")
		writeJSON(bw, map[string]any{"ph": "M", "pid": 1, "tid": i + 1, "name": "thread_name", "args": map[string]any{"name": laneName(i, n)}})
		bw.WriteString(",\n")
		writeJSON(bw, map[string]any{"ph": "M", "pid": 1, "tid": i + 1, "name": "thread_sort_index", "args": map[string]any{"sort_index": i}})
	}
	for _, i := range order {
		e := evs[i]
		a := map[string]any{"id": e.span.id}
		if e.span.parent != 0 {
			a["parent"] = e.span.parent
		}
		for _, x := range args[i] {
			if x.num {
				a[x.key] = x.n
			} else {
				a[x.key] = x.s
			}
		}
		if e.unfinished {
			a["unfinished"] = true
		}
		bw.WriteString(",\n")
		writeJSON(bw, map[string]any{
			"ph": "X", "pid": 1, "tid": e.span.lane + 1, "cat": "kiln",
			"name": e.span.name,
			"ts":   micros(e.span.begin),
			"dur":  micros(e.dur),
			"args": a,
		})
	}
	bw.WriteString("\n]}\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing trace: %w", err)
	}
	return nil
}

// laneName names lane i after the span that first opened it: lane 0 is
// the build's own.
func laneName(i int, first string) string {
	if i == 0 {
		return "build"
	}
	return "lane " + strconv.Itoa(i) + ": " + first
}

// micros is d in microseconds, the unit of ts and dur, with nanosecond
// precision kept as a fraction.
func micros(d time.Duration) json.Number {
	return json.Number(strconv.FormatFloat(float64(d.Nanoseconds())/1e3, 'f', 3, 64))
}

func writeJSON(w *bufio.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only maps of strings and numbers are written: cannot happen.
		panic(err)
	}
	w.Write(b)
}

// Event is one complete ("X") event of a trace file, as Parse reads it.
type Event struct {
	Name string         `json:"name"`
	Ph   string         `json:"ph"`
	Tid  int            `json:"tid"`
	TS   float64        `json:"ts"`  // µs since the build started
	Dur  float64        `json:"dur"` // µs
	Args map[string]any `json:"args"`
}

// ID is the span's id, and Parent its parent's (0 for a root span).
func (e Event) ID() int64     { return argInt(e.Args["id"]) }
func (e Event) Parent() int64 { return argInt(e.Args["parent"]) }

func argInt(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

// Parse reads a trace file written by Write and returns its complete
// events in file order (by start time), without the metadata events.
func Parse(r io.Reader) ([]Event, error) {
	var f struct {
		TraceEvents []Event `json:"traceEvents"`
	}
	if err := json.NewDecoder(r).Decode(&f); err != nil {
		return nil, fmt.Errorf("reading trace: %w", err)
	}
	out := f.TraceEvents[:0]
	for _, e := range f.TraceEvents {
		if e.Ph == "X" {
			out = append(out, e)
		}
	}
	return out, nil
}
