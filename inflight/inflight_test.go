package inflight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestAcquireOnce: of many callers of one key at once, one runs at a
// time, and each caller after the first knows it waited.
func TestAcquireOnce(t *testing.T) {
	var tab Table
	var running, waited atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, w, err := tab.Acquire(context.Background(), "k", nil)
			if err != nil {
				t.Error(err)
				return
			}
			if running.Add(1) != 1 {
				t.Error("two callers run key k at once")
			}
			if w {
				waited.Add(1)
			}
			running.Add(-1)
			release()
			release() // a second release is harmless
		}()
	}
	wg.Wait()
	if len(tab.running) != 0 {
		t.Errorf("%d keys still running after every release", len(tab.running))
	}
}

// TestAcquireAfterFailure: the runner's cancellation is not the waiter's:
// a waiter whose runner released without a result gets the key itself;
// a waiter whose own context ends gets its error and owns nothing.
func TestAcquireAfterFailure(t *testing.T) {
	tests := []struct {
		name         string
		cancelWaiter bool
		wantErr      error
	}{
		{"runner gone", false, nil},
		{"waiter gone", true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tab Table
			waiting := make(chan struct{}, 1)
			release, waited, err := tab.Acquire(context.Background(), "k", nil)
			if err != nil || waited {
				t.Fatalf("first Acquire: waited %v, %v", waited, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				release func()
				waited  bool
				err     error
			}
			done := make(chan result)
			go func() {
				r, w, err := tab.Acquire(ctx, "k", func() { waiting <- struct{}{} })
				done <- result{r, w, err}
			}()
			<-waiting
			if other, w, err := tab.Acquire(context.Background(), "other", nil); err != nil || w {
				t.Errorf("another key waits: %v, %v", w, err)
			} else {
				other()
			}
			if tt.cancelWaiter {
				cancel()
			} else {
				release() // as a failed or cancelled runner does
			}
			r := <-done
			if !errors.Is(r.err, tt.wantErr) {
				t.Fatalf("waiter's Acquire: %v, want %v", r.err, tt.wantErr)
			}
			if tt.wantErr == nil {
				if !r.waited {
					t.Error("the waiter does not know it waited")
				}
				r.release()
			} else {
				release()
			}
			if len(tab.running) != 0 {
				t.Errorf("%d keys still running", len(tab.running))
			}
		})
	}
}

// TestNilTable shares nothing and reports nowhere.
func TestNilTable(t *testing.T) {
	var tab *Table
	release, waited, err := tab.Acquire(context.Background(), "k", nil)
	if err != nil || waited {
		t.Fatalf("nil table: waited %v, %v", waited, err)
	}
	release()
	tab.Report(Event{Step: "s", Key: "k", Outcome: Ran})
}
