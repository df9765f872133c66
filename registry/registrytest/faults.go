package registrytest

import (
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// FaultProxy is a reverse proxy that fails a share of the requests it
// receives, half by resetting the connection and half by answering 503,
// the two faults load balancers in front of registries produce. Faults are
// bounded: one request (method and path) fails at most MaxRun times in a
// row, so a client that retries at least that often always gets through,
// and a test with a fixed seed is repeatable.
type FaultProxy struct {
	// Host is 127.0.0.1:PORT of the proxy (plain HTTP).
	Host string

	mu      sync.Mutex
	rng     *rand.Rand
	rate    float64
	maxRun  int
	run     map[string]int
	resets  int
	refused int
	passed  int
	seen    []Request
}

// NewFaultProxy proxies to target (a URL such as http://127.0.0.1:5000),
// failing about rate of the requests (at most maxRun times in a row each).
func NewFaultProxy(t testing.TB, target string, rate float64, maxRun int, seed uint64) *FaultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), rate: rate, maxRun: maxRun, run: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = quiet
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Authorization: r.Header.Get("Authorization")})
		p.mu.Unlock()
		switch p.decide(r.Method + " " + r.URL.Path) {
		case "reset":
			// Read nothing more, and close with SO_LINGER 0 so the client
			// sees a reset rather than a clean end of stream.
			hj, ok := w.(http.Hijacker)
			if !ok {
				http.Error(w, "cannot hijack", http.StatusInternalServerError)
				return
			}
			conn, _, err := hj.Hijack()
			if err != nil {
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			conn.Close()
		case "503":
			io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
			http.Error(w, "injected fault", http.StatusServiceUnavailable)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	srv.Config.ErrorLog = quiet
	srv.Start()
	t.Cleanup(srv.Close)
	p.Host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *FaultProxy) decide(key string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run[key] < p.maxRun && p.rng.Float64() < p.rate {
		p.run[key]++
		if p.rng.IntN(2) == 0 {
			p.resets++
			return "reset"
		}
		p.refused++
		return "503"
	}
	p.run[key] = 0
	p.passed++
	return ""
}

// Counts returns how many requests were reset, answered 503 and passed.
func (p *FaultProxy) Counts() (resets, unavailable, passed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resets, p.refused, p.passed
}

// Requests returns every request the proxy received, failed or passed.
func (p *FaultProxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.seen...)
}
