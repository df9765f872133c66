package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// ShutdownGrace is how long Run lets requests in flight finish once its
// context is done.
const ShutdownGrace = 10 * time.Second

// Run serves the API on ls until ctx is done, then stops accepting,
// closes the listeners (removing the unix socket files it created) and
// returns nil once the requests in flight are finished or ShutdownGrace
// passed. It returns early with the error of a listener that fails.
func (s *Server) Run(ctx context.Context, ls []Listener) error {
	if len(ls) == 0 {
		return errors.New("serving: no address to listen on: give --host")
	}
	// Requests in flight outlive ctx by up to ShutdownGrace: they see a
	// context of their own, cancelled when the grace is over (and, for
	// each, when its client goes away).
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	errs := make(chan error, len(ls))
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serving on %s: %w", l.Address, err)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	if serr := hs.Shutdown(sctx); serr != nil {
		cancelBase()
		hs.Close()
	}
	// Serve returned for every listener: they are closed, sockets gone.
	wg.Wait()
	return err
}
