package planner

import (
	"context"
	"fmt"
	"slices"

	"github.com/kiln-build/kiln/inflight"
	"github.com/kiln-build/kiln/progress"
)

// noCache says the steps of s must run whatever the cache holds.
func (b *build) noCache(s *stage) bool {
	return b.opt.NoCache || slices.Contains(b.opt.NoCacheFilter, s.name) || slices.Contains(b.opt.NoCacheFilter, s.displayName)
}

// shareStep is called when key missed the cache: it waits while another
// build of this process (Options.Shared) runs the same step, and then
// applies that build's result to s (hit). Otherwise the step is the
// caller's to run, and release must be called once it is stored or has
// failed: builds that need key meanwhile wait for it. A build that must
// not reuse the cache neither waits nor makes others wait.
func (b *build) shareStep(ctx context.Context, s *stage, name, key string, log progress.Step) (release func(), hit bool, err error) {
	if b.opt.Shared == nil || b.noCache(s) {
		return func() {}, false, nil
	}
	release, waited, err := b.opt.Shared.Acquire(ctx, key, func() {
		fmt.Fprintln(log, "waiting for a concurrent build running the same step")
	})
	if err != nil || !waited {
		return release, false, err
	}
	// Whoever ran key has stored its result, unless it failed or was
	// cancelled: then the step is ours to run, its error not ours.
	if hit, err = b.lookup(s, key); err != nil || hit {
		release()
		if hit {
			fmt.Fprintln(log, "shared with a concurrent build")
			b.stepEvent(name, key, inflight.Shared)
		}
		return nil, hit, err
	}
	return release, false, nil
}

// stepEvent reports what became of a step to Options.Shared's events.
func (b *build) stepEvent(name, key string, o inflight.Outcome) {
	b.opt.Shared.Report(inflight.Event{Build: b.opt.BuildID, Step: name, Key: key, Outcome: o})
}
