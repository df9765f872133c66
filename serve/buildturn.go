package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultShutdownTimeout is how long Run lets builds in flight finish
// once asked to stop, unless SetShutdownTimeout says otherwise.
const DefaultShutdownTimeout = 60 * time.Second

// DefaultMaxConcurrentBuilds is how many builds run at once unless kiln
// serve is told otherwise: twice the CPUs, at least 4. A build mostly
// waits (on registries, on its clients, on RUN steps that sleep or
// download), and each bounds its own parallel steps by the CPUs.
func DefaultMaxConcurrentBuilds() int {
	return max(4, 2*runtime.NumCPU())
}

// SetShutdownTimeout sets how long Run lets requests in flight (builds)
// finish once its context is done, before it cancels them; 0 cancels
// them at once.
func (s *Server) SetShutdownTimeout(d time.Duration) {
	s.shutdownTimeout = max(d, 0)
}

// buildTurn waits for one of the MaxConcurrent build slots, telling
// progress when it has to wait. It fails only when ctx ends first: the
// client left, or the server stops. release frees the slot; until it is
// called, Run counts the build as in flight.
func (s *Server) buildTurn(ctx context.Context, progress io.Writer) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case s.buildSlots <- struct{}{}:
	default:
		fmt.Fprintf(progress, "waiting for a build slot: %d builds are running (kiln serve --max-concurrent-builds)\n", cap(s.buildSlots))
		select {
		case s.buildSlots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func() { <-s.buildSlots }, nil
}

// inFlight counts the builds being served, so that Run returns only once
// the last is over (its store no longer in use).
type inFlight struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when n drops to 0 after close
}

// enter counts a build in; false once close was called.
func (f *inFlight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.n++
	return true
}

func (f *inFlight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// close refuses new builds and waits for those in flight.
func (f *inFlight) close() {
	f.mu.Lock()
	f.closed = true
	if f.n == 0 {
		f.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	f.idle = idle
	f.mu.Unlock()
	<-idle
}

// resourceQuery reads POST /build's RUN resources, shm size, extra hosts
// and cache sources into req. The docker CLI sends every one of them,
// 0 or empty when not set.
func resourceQuery(q url.Values, req *BuildRequest) error {
	ints := map[string]int64{}
	for _, name := range []string{"memory", "memswap", "cpushares", "cpuquota", "cpuperiod", "shmsize"} {
		v := strings.TrimSpace(q.Get(name))
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return badRequest(fmt.Errorf("invalid query parameter %s=%q: want a whole number", name, v))
		}
		ints[name] = n
	}
	nonNegative := func(name string) error {
		if ints[name] < 0 {
			return badRequest(fmt.Errorf("invalid query parameter %s=%d: want 0 (unset) or a positive number", name, ints[name]))
		}
		return nil
	}
	for _, name := range []string{"memory", "cpushares", "cpuquota", "cpuperiod", "shmsize"} {
		if err := nonNegative(name); err != nil {
			return err
		}
	}
	req.Memory, req.MemorySwap, req.CPUShares, req.ShmSize = ints["memory"], ints["memswap"], ints["cpushares"], ints["shmsize"]
	switch {
	case req.MemorySwap < -1:
		return badRequest(fmt.Errorf("invalid query parameter memswap=%d: want -1 (unlimited swap), 0 (unset) or a size in bytes", req.MemorySwap))
	case req.MemorySwap > 0 && req.Memory == 0:
		return badRequest(fmt.Errorf("invalid query parameter memswap=%d: it needs memory too (docker build --memory)", req.MemorySwap))
	case req.MemorySwap > 0 && req.MemorySwap < req.Memory:
		return badRequest(fmt.Errorf("invalid query parameter memswap=%d: it is memory plus swap, so at least memory=%d", req.MemorySwap, req.Memory))
	}
	if quota, period := ints["cpuquota"], ints["cpuperiod"]; quota > 0 {
		if period == 0 {
			period = 100000 // the kernel's default CFS period, as dockerd's
		}
		if period < 1000 || period > 1000000 {
			return badRequest(fmt.Errorf("invalid query parameter cpuperiod=%d: want 1000 to 1000000 microseconds", period))
		}
		if quota < 1000 {
			return badRequest(fmt.Errorf("invalid query parameter cpuquota=%d: want at least 1000 microseconds", quota))
		}
		req.CPUs = float64(quota) / float64(period)
	}
	if v := q.Get("cpusetcpus"); v != "" {
		return badRequest(fmt.Errorf("invalid query parameter cpusetcpus=%q: kiln does not pin RUN steps to CPUs; leave --cpuset-cpus out and use --cpu-quota or --cpu-shares", v))
	}
	for _, h := range q["extrahosts"] {
		host, ip, ok := strings.Cut(h, ":")
		if !ok || host == "" || ip == "" {
			return badRequest(fmt.Errorf("invalid query parameter extrahosts=%q: want HOST:IP, such as db:10.0.0.5", h))
		}
		req.ExtraHosts = append(req.ExtraHosts, h)
	}
	if v := strings.TrimSpace(q.Get("cachefrom")); v != "" && v != "null" {
		if err := json.Unmarshal([]byte(v), &req.CacheFrom); err != nil {
			return badRequest(fmt.Errorf("invalid query parameter cachefrom: want a JSON list of image names, such as [\"registry.example.com/app:cache\"]: %w", err))
		}
		for _, ref := range req.CacheFrom {
			if ref == "" || strings.ContainsAny(ref, "=, \t\n") {
				return badRequest(fmt.Errorf("invalid query parameter cachefrom: %q is not an image name", ref))
			}
		}
	}
	return nil
}
