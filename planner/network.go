package planner

import (
	"context"
	"os"

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
	dir := ""
	if b.opt.Store != nil {
		d, err := b.opt.Store.TempDir("net-")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	_, span := trace.Start(ctx, "set up the build network")
	n, err := executor.NewNetwork(ctx, dir)
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

// closeNetwork tears the build's network down once no step runs.
func (b *build) closeNetwork() {
	b.netMu.Lock()
	defer b.netMu.Unlock()
	if b.net == nil {
		return
	}
	// Nothing of the build depends on it any more: a failure to tidy up
	// is not the build's.
	_, span := trace.Start(b.outer, "tear down the build network")
	b.net.Close()
	span.End()
	if b.netDir != "" {
		os.RemoveAll(b.netDir)
	}
	b.net = nil
}
