package planner

import (
	"context"
	"errors"
	"os"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/trace"
)

// network returns the build's network namespace for RUN steps of the
// default network mode, setting it up on first use: a build whose steps
// all come from the cache never starts one.
func (b *build) network(ctx context.Context) (*executor.Network, error) {
	b.netMu.Lock()
	defer b.netMu.Unlock()
	if b.net != nil {
		return b.net, nil
	}
	if b.netClosed {
		return nil, errors.New("the build is over: no network is set up any more")
	}
	dir := ""
	if b.opt.Store != nil {
		d, err := b.opt.Store.TempDir("net-")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	// The helper starts in the background: a step's sandbox waits for it
	// before it mounts its root (and fails with its error).
	_, span := trace.Start(ctx, "set up the build network")
	n, err := executor.StartNetworkWarm(ctx, dir, b.warm, b.opt.Sandbox)
	span.End()
	if err != nil {
		if dir != "" {
			os.RemoveAll(dir)
		}
		return nil, err
	}
	b.net, b.netDir = n, dir
	return n, nil
}

// netRuns counts the RUN steps of the reachable stages that use the
// build's own network: with none, no network is set up ahead (a trigger's
// RUN still sets it up when it runs).
func (b *build) netRuns(reach map[*stage]bool) int {
	runs := 0
	for s := range reach {
		for _, c := range s.st.Commands {
			if r, ok := c.(*instructions.RunCommand); ok {
				n := instructions.GetNetwork(r)
				if n == instructions.NetworkDefault {
					n = b.opt.Network
				}
				if n == executor.NetworkDefault {
					runs++
				}
			}
		}
	}
	return runs
}

// prepareNetwork starts setting the build's network up in the background
// once a step is known to run, so that the first RUN finds it ready (a
// build cached through to the end sets up none). A failure here is left
// for that RUN to meet and report.
func (b *build) prepareNetwork() {
	// The sandbox init too: the first RUN finds it loaded.
	executor.PrepareInit()
	if !b.wantNet {
		return
	}
	b.netOnce.Do(func() {
		go func() {
			b.network(b.outer) // starts the first RUN's child too
		}()
	})
}

// later runs f off the caller's path: in the background when the caller
// of Build gave Options.Background to wait on, else at once.
func (b *build) later(f func()) {
	if b.opt.Background == nil {
		f()
		return
	}
	b.opt.Background.Add(1)
	go func() {
		defer b.opt.Background.Done()
		f()
	}()
}

// removeLater removes a finished step's scratch directory (what is left
// of its overlay work dir and mount points) off the step's path. The
// store empties ROOT/tmp of whatever a killed kiln leaves.
func (b *build) removeLater(dir string) {
	b.later(func() {
		// Under the build, not the step: the step may be over.
		_, span := trace.Start(b.outer, "remove step directory")
		// Not under a sandbox still exiting, whose overlay may use it.
		executor.WaitSandboxExits()
		os.RemoveAll(dir)
		span.End()
	})
}

// closeNetwork tears the build's network down once no step runs, off the
// build's path.
func (b *build) closeNetwork() { b.later(b.closeNetworkNow) }

func (b *build) closeNetworkNow() {
	b.netMu.Lock()
	defer b.netMu.Unlock()
	b.netClosed = true // a late prepareNetwork must not start one
	if b.net == nil {
		return
	}
	// Nothing of the build depends on it any more: a failure to tidy up
	// is not the build's.
	_, span := trace.Start(b.outer, "tear down the build network")
	b.net.Release()
	span.End()
	if b.netDir != "" {
		os.RemoveAll(b.netDir)
	}
	b.net = nil
}
