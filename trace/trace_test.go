package trace

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
)

func write(t *testing.T, r *Recorder) []Event {
	t.Helper()
	var buf bytes.Buffer
	if err := r.Write(&buf); err != nil {
		t.Fatal(err)
	}
	evs, err := Parse(&buf)
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	return evs
}

func byName(evs []Event) map[string]Event {
	m := map[string]Event{}
	for _, e := range evs {
		m[e.Name] = e
	}
	return m
}

// within reports whether child lies inside parent's time (ts and dur are
// written rounded to the nanosecond).
func within(child, parent Event) bool {
	const eps = 0.002
	return child.TS+eps >= parent.TS && child.TS+child.Dur <= parent.TS+parent.Dur+eps
}

func TestDisabledIsFreeAndInert(t *testing.T) {
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, sp := Start(ctx, "step")
		sp.SetInt("bytes", 42)
		sp.SetString("ref", "busybox")
		sp.SetError(nil)
		sp.End()
		if c != ctx {
			panic("Start without a recorder changed the context")
		}
	})
	if allocs != 0 {
		t.Errorf("a span with tracing off allocates %v times, want 0", allocs)
	}
	if Enabled(ctx) {
		t.Error("Enabled without a recorder")
	}
	if With(ctx, nil) != ctx {
		t.Error("With(nil) changed the context")
	}
}

func TestNestingAndLanes(t *testing.T) {
	r := New()
	ctx := With(context.Background(), r)
	if !Enabled(ctx) {
		t.Fatal("not Enabled with a recorder")
	}
	bctx, build := Start(ctx, "build")
	sctx, stage := Start(bctx, "stage a")
	_, lookup := Start(sctx, "cache lookup")
	lookup.End()
	// two layers pulled at once under one stage: separate lanes
	var wg sync.WaitGroup
	started := make(chan struct{})
	_, l1 := Start(sctx, "layer 1")
	go func() {
		defer wg.Done()
		<-started
	}()
	wg.Add(1)
	_, l2 := Start(sctx, "layer 2")
	l2.SetInt("bytes", 1234)
	close(started)
	wg.Wait()
	l2.End()
	l1.End()
	stage.End()
	_, after := Start(bctx, "export")
	after.SetString("type", "oci")
	after.SetError(errors.New("disk full"))
	after.End()
	build.End()
	build.End() // twice: no second event

	evs := write(t, r)
	if len(evs) != 6 {
		t.Fatalf("got %d events, want 6: %+v", len(evs), evs)
	}
	m := byName(evs)
	tests := []struct {
		child, parent string
		sameLane      bool
	}{
		{"stage a", "build", true},
		{"cache lookup", "stage a", true},
		{"layer 1", "stage a", true},
		{"layer 2", "stage a", false}, // layer 1 was open on stage a's lane
		{"export", "build", true},
	}
	for _, tt := range tests {
		c, p := m[tt.child], m[tt.parent]
		if c.Parent() != p.ID() {
			t.Errorf("%s: parent id %d, want %s's %d", tt.child, c.Parent(), tt.parent, p.ID())
		}
		if !within(c, p) {
			t.Errorf("%s [%v+%v] is not within %s [%v+%v]", tt.child, c.TS, c.Dur, tt.parent, p.TS, p.Dur)
		}
		if (c.Tid == p.Tid) != tt.sameLane {
			t.Errorf("%s on lane %d, %s on lane %d: same lane want %v", tt.child, c.Tid, tt.parent, p.Tid, tt.sameLane)
		}
	}
	if got := m["layer 2"].Args["bytes"]; got != float64(1234) {
		t.Errorf("layer 2 bytes = %v, want 1234", got)
	}
	if m["export"].Args["type"] != "oci" || m["export"].Args["error"] != "disk full" {
		t.Errorf("export args = %v", m["export"].Args)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].TS < evs[i-1].TS {
			t.Errorf("events not ordered by start: %s at %v after %s at %v", evs[i].Name, evs[i].TS, evs[i-1].Name, evs[i-1].TS)
		}
	}
}

// A failed build's trace is written while spans are still open.
func TestUnfinishedSpans(t *testing.T) {
	r := New()
	ctx := With(context.Background(), r)
	ctx, build := Start(ctx, "build")
	_, step := Start(ctx, "RUN false")
	_ = build
	evs := write(t, r)
	m := byName(evs)
	for _, name := range []string{"build", "RUN false"} {
		e, ok := m[name]
		if !ok {
			t.Fatalf("no %q event in %+v", name, evs)
		}
		if e.Args["unfinished"] != true {
			t.Errorf("%s: args %v, want unfinished", name, e.Args)
		}
	}
	if !within(m["RUN false"], m["build"]) {
		t.Errorf("unfinished child not within its parent: %+v", evs)
	}
	step.End()
	evs = write(t, r)
	if e := byName(evs)["RUN false"]; e.Args["unfinished"] != nil {
		t.Errorf("ended span still unfinished: %v", e.Args)
	}
}

// Spans from many goroutines: no race, every span recorded, no two spans
// overlapping on one lane unless nested.
func TestConcurrentSpans(t *testing.T) {
	r := New()
	ctx, build := Start(With(context.Background(), r), "build")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				c, s := Start(ctx, "step")
				_, in := Start(c, "run")
				in.SetInt("n", 1)
				in.End()
				s.End()
			}
		})
	}
	wg.Wait()
	build.End()
	evs := write(t, r)
	if len(evs) != 1+8*50*2 {
		t.Fatalf("got %d events, want %d", len(evs), 1+8*50*2)
	}
	byID := map[int64]Event{}
	for _, e := range evs {
		byID[e.ID()] = e
	}
	perLane := map[int][]Event{}
	for _, e := range evs {
		perLane[e.Tid] = append(perLane[e.Tid], e)
		if p, ok := byID[e.Parent()]; e.Parent() != 0 && (!ok || !within(e, p)) {
			t.Fatalf("%s %d not within its parent %d", e.Name, e.ID(), e.Parent())
		}
	}
	// On one lane, events sorted by start either nest or follow each other.
	for lane, l := range perLane {
		var stack []Event
		for _, e := range l {
			for len(stack) > 0 && !within(e, stack[len(stack)-1]) {
				top := stack[len(stack)-1]
				if e.TS < top.TS+top.Dur-0.002 {
					t.Fatalf("lane %d: %s %d overlaps %s %d without nesting", lane, e.Name, e.ID(), top.Name, top.ID())
				}
				stack = stack[:len(stack)-1]
			}
			stack = append(stack, e)
		}
	}
}

func TestWriteFile(t *testing.T) {
	r := New()
	_, s := Start(With(context.Background(), r), "build")
	s.End()
	path := t.TempDir() + "/trace.json"
	if err := r.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFile(t.TempDir() + "/missing/trace.json"); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

func BenchmarkSpanDisabled(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, s := Start(ctx, "step")
		s.SetInt("bytes", 1)
		s.End()
	}
}

func BenchmarkSpanEnabled(b *testing.B) {
	ctx, root := Start(With(context.Background(), New()), "build")
	defer root.End()
	b.ReportAllocs()
	for b.Loop() {
		_, s := Start(ctx, "step")
		s.SetInt("bytes", 1)
		s.End()
	}
}

// A span started under one that has ended (a lazy image fetching with the
// context it was resolved with) goes to the nearest open ancestor.
func TestStartUnderEndedSpan(t *testing.T) {
	r := New()
	ctx, build := Start(With(context.Background(), r), "build")
	sctx, stage := Start(ctx, "stage")
	rctx, resolve := Start(sctx, "resolve")
	resolve.End()
	_, late := Start(rctx, "GET blob")
	late.End()
	stage.End()
	build.End()
	m := byName(write(t, r))
	if got, want := m["GET blob"].Parent(), m["stage"].ID(); got != want {
		t.Errorf("late span's parent %d, want the stage's %d", got, want)
	}
	if m["GET blob"].Tid != m["stage"].Tid {
		t.Errorf("late span on lane %d, its new parent on %d", m["GET blob"].Tid, m["stage"].Tid)
	}
}

// A span left open on an error path while its parent ended still nests in
// the parent.
func TestUnfinishedUnderEnded(t *testing.T) {
	r := New()
	ctx, build := Start(With(context.Background(), r), "build")
	_, export := Start(ctx, "export oci")
	_ = export // an error return that never ends it
	build.End()
	m := byName(write(t, r))
	if e := m["export oci"]; e.Args["unfinished"] != true || !within(e, m["build"]) {
		t.Errorf("open span under an ended one: %+v, build %+v", e, m["build"])
	}
}
