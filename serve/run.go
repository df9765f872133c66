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

// Run serves the API on ls until ctx is done, then stops accepting,
// closes the listeners (removing the unix socket files it created) and
// returns nil once the requests in flight are finished or, when the
// shutdown timeout (SetShutdownTimeout) passed first, cancelled and
// cleaned up after. It returns early with the error of a listener that
// fails.
func (s *Server) Run(ctx context.Context, ls []Listener) error {
	if len(ls) == 0 {
		return errors.New("serving: no address to listen on: give --host")
	}
	// Requests in flight outlive ctx by up to the shutdown timeout: they see a
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
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	if serr := hs.Shutdown(sctx); serr != nil {
		s.cancelled.Store(true)
		cancelBase()
		// A cancelled build cleans up (its RUN processes, mounts,
		// scratch space) and tells its client why before its connection
		// is closed; the store must not be closed under it either.
		s.builds.close()
		hs.Close()
	}
	s.builds.close()
	if s.files != nil {
		s.files.Remove() // every build is over: nobody takes from it
	}
	// Serve returned for every listener: they are closed, sockets gone.
	wg.Wait()
	return err
}
