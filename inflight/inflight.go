// Package inflight lets builds running at once in one process share the
// steps they have in common: the first build to need a step (by cache
// key) runs it, and the others wait for it and then take its result from
// the cache, as BuildKit's solver merges identical vertices of concurrent
// builds.
//
// Only the right to run a key is shared, never an outcome: a waiter whose
// runner failed or was cancelled looks the key up again and, finding
// nothing, runs the step itself. One build's cancellation never fails
// another.
package inflight

import (
	"context"
	"sync"
	"time"
)

// Table is the steps being run now, by key. The zero value is ready; a
// nil *Table shares nothing (every Acquire owns its key at once).
type Table struct {
	mu      sync.Mutex
	running map[string]chan struct{}

	// Events, when set, is told of every step outcome reported through
	// Report. Calls are serialized.
	Events func(Event)
	evMu   sync.Mutex
}

// Acquire waits until no one else runs key, then makes the caller its
// runner. waited says another build was running key meanwhile: the
// caller should look the key up again before running it, as that build
// has probably stored its result. onWait, when set, is called once when
// the caller starts waiting. release ends the caller's turn (call it
// once the step's result is stored, or when it failed); it must be
// called, waited or not. Acquire returns ctx's error if ctx ends first,
// and then the caller owns nothing.
func (t *Table) Acquire(ctx context.Context, key string, onWait func()) (release func(), waited bool, err error) {
	if t == nil {
		return func() {}, false, nil
	}
	for {
		t.mu.Lock()
		ch, busy := t.running[key]
		if !busy {
			if t.running == nil {
				t.running = map[string]chan struct{}{}
			}
			ch = make(chan struct{})
			t.running[key] = ch
			t.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					t.mu.Lock()
					delete(t.running, key)
					t.mu.Unlock()
					close(ch)
				})
			}, waited, nil
		}
		t.mu.Unlock()
		if !waited && onWait != nil {
			onWait()
		}
		waited = true
		select {
		case <-ch:
			// the runner is done, well or not: compete for the key again
		case <-ctx.Done():
			return nil, waited, ctx.Err()
		}
	}
}

// Outcome is what became of one build's step.
type Outcome string

// The outcomes a build reports.
const (
	// Ran: the build ran the step and stored its result.
	Ran Outcome = "ran"
	// Cached: the step's result was in the cache already.
	Cached Outcome = "cached"
	// Shared: another build ran the step at the same time, and this
	// one waited for it and used its result.
	Shared Outcome = "shared"
)

// Event is a step outcome of one build.
type Event struct {
	Time    time.Time `json:"time"`
	Build   string    `json:"build,omitempty"`
	Step    string    `json:"step"`
	Key     string    `json:"key"`
	Outcome Outcome   `json:"outcome"`
}

// Report passes e to Events, if set.
func (t *Table) Report(e Event) {
	if t == nil || t.Events == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	t.evMu.Lock()
	defer t.evMu.Unlock()
	t.Events(e)
}
