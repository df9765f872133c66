package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/registry/registrytest"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// scripted answers requests with the given statuses in turn; 0 stands
// for a reset connection.
type scripted struct {
	statuses []int
	header   string
	calls    int
	bodies   []string
}

func (s *scripted) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		s.bodies = append(s.bodies, string(b))
	}
	code := s.statuses[min(s.calls, len(s.statuses)-1)]
	s.calls++
	if code == 0 {
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	}
	h := http.Header{}
	if code == http.StatusTooManyRequests && s.header != "" {
		h.Set("Retry-After", s.header)
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

func TestRetrying(t *testing.T) {
	tests := []struct {
		name       string
		statuses   []int
		header     string
		body       io.Reader // nil: GET; a strings.Reader is replayable
		streamed   bool      // body without GetBody
		wantCalls  int
		wantStatus int // 0: an error
	}{
		{name: "ok", statuses: []int{200}, wantCalls: 1, wantStatus: 200},
		{name: "429 with Retry-After", statuses: []int{429, 200}, header: "0", wantCalls: 2, wantStatus: 200},
		{name: "429 without Retry-After", statuses: []int{429, 200}, wantCalls: 2, wantStatus: 200},
		{name: "too long a wait goes up", statuses: []int{429, 200}, header: "3600", wantCalls: 1, wantStatus: 429},
		{name: "503", statuses: []int{503, 503, 200}, wantCalls: 3, wantStatus: 200},
		{name: "reset", statuses: []int{0, 202}, wantCalls: 2, wantStatus: 202},
		{name: "tries are bounded", statuses: []int{503}, wantCalls: 4, wantStatus: 503},
		{name: "resets are bounded", statuses: []int{0}, wantCalls: 4, wantStatus: 0},
		{name: "404 is an answer", statuses: []int{404, 200}, wantCalls: 1, wantStatus: 404},
		{name: "500 is left to the caller", statuses: []int{500, 200}, wantCalls: 1, wantStatus: 500},
		{name: "replayable body", statuses: []int{503, 201}, body: strings.NewReader("manifest"), wantCalls: 2, wantStatus: 201},
		{name: "streamed body goes up", statuses: []int{503, 201}, body: strings.NewReader("blob"), streamed: true, wantCalls: 1, wantStatus: 503},
		{name: "streamed body after a reset", statuses: []int{0, 201}, body: strings.NewReader("blob"), streamed: true, wantCalls: 1, wantStatus: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scripted{statuses: tt.statuses, header: tt.header}
			rt := &retrying{inner: s, tries: 3, base: time.Millisecond, max: time.Minute, now: time.Now}
			method := http.MethodGet
			if tt.body != nil {
				method = http.MethodPut
			}
			req, err := http.NewRequest(method, "http://r.example/v2/", tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.streamed {
				req.GetBody = nil
			}
			resp, err := rt.RoundTrip(req)
			status := 0
			if err == nil {
				status = resp.StatusCode
			}
			if s.calls != tt.wantCalls || status != tt.wantStatus {
				t.Errorf("%d calls ending in %d (%v), want %d ending in %d", s.calls, status, err, tt.wantCalls, tt.wantStatus)
			}
			for _, b := range s.bodies {
				if tt.body != nil && b == "" {
					t.Errorf("a retry sent an empty body")
				}
			}
		})
	}
}

func TestRetryingCancelled(t *testing.T) {
	s := &scripted{statuses: []int{429}, header: "30"}
	rt := &retrying{inner: s, tries: 3, base: time.Millisecond, max: time.Minute, now: time.Now}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://r.example/v2/", nil)
	start := time.Now()
	_, err := rt.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %v, want the context's error at once", err, time.Since(start))
	}
}

// TestTLS checks where a registry's CA and client certificate may come
// from: Docker's certs.d, kiln.toml, or nowhere with --insecure-registry.
func TestTLS(t *testing.T) {
	ca := registrytest.NewCA(t)
	clientCert, clientKey := ca.Issue(t, true, "kiln")

	tests := []struct {
		name       string
		clientAuth bool
		setup      func(t *testing.T, r *Resolver, host string)
		wantErr    string
	}{
		{name: "unknown CA", setup: func(*testing.T, *Resolver, string) {}, wantErr: "unknown authority"},
		{name: "certs.d", setup: func(t *testing.T, r *Resolver, host string) {
			ca.InstallCertsDir(t, r.CertsDir, host)
		}},
		{name: "certs.d of another port", setup: func(t *testing.T, r *Resolver, host string) {
			ca.InstallCertsDir(t, r.CertsDir, "127.0.0.1:1")
		}, wantErr: "unknown authority"},
		{name: "kiln.toml ca", setup: func(t *testing.T, r *Resolver, host string) {
			p := filepath.Join(t.TempDir(), "ca.pem")
			registrytest.WriteFile(t, p, ca.PEM)
			r.Config.Registry = map[string]HostConfig{host: {CA: []string{p}}}
		}},
		{name: "insecure-registry", setup: func(t *testing.T, r *Resolver, host string) {
			r.Insecure = []string{host}
		}},
		{name: "kiln.toml insecure", setup: func(t *testing.T, r *Resolver, host string) {
			r.Config.Registry = map[string]HostConfig{host: {Insecure: true}}
		}},
		{name: "client certificate missing", clientAuth: true, setup: func(t *testing.T, r *Resolver, host string) {
			ca.InstallCertsDir(t, r.CertsDir, host)
		}, wantErr: "certificate"},
		{name: "client certificate in certs.d", clientAuth: true, setup: func(t *testing.T, r *Resolver, host string) {
			ca.InstallCertsDir(t, r.CertsDir, host)
			registrytest.WriteFile(t, filepath.Join(r.CertsDir, host, "client.cert"), clientCert)
			registrytest.WriteFile(t, filepath.Join(r.CertsDir, host, "client.key"), clientKey)
		}},
		{name: "client certificate without its key", clientAuth: true, setup: func(t *testing.T, r *Resolver, host string) {
			ca.InstallCertsDir(t, r.CertsDir, host)
			registrytest.WriteFile(t, filepath.Join(r.CertsDir, host, "client.cert"), clientCert)
		}, wantErr: "has no key"},
		{name: "client certificate in kiln.toml", clientAuth: true, setup: func(t *testing.T, r *Resolver, host string) {
			dir := t.TempDir()
			registrytest.WriteFile(t, filepath.Join(dir, "ca.pem"), ca.PEM)
			registrytest.WriteFile(t, filepath.Join(dir, "c.pem"), clientCert)
			registrytest.WriteFile(t, filepath.Join(dir, "k.pem"), clientKey)
			r.Config.Registry = map[string]HostConfig{host: {
				CA:       []string{filepath.Join(dir, "ca.pem")},
				KeyPairs: []KeyPair{{Cert: filepath.Join(dir, "c.pem"), Key: filepath.Join(dir, "k.pem")}},
			}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ca.ServerTLS(t)
			if tt.clientAuth {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
				cfg.ClientCAs = ca.Pool()
			}
			srv := registrytest.Serve(t, registrytest.ServerOptions{TLS: cfg})
			prep := ca.InstallCertsDir(t, t.TempDir(), srv.Host)
			registrytest.WriteFile(t, filepath.Join(prep, srv.Host, "client.cert"), clientCert)
			registrytest.WriteFile(t, filepath.Join(prep, srv.Host, "client.key"), clientKey)
			ref := pushRandom(t, srv.Host, "tls/app:1", &Resolver{CertsDir: prep})

			r := &Resolver{CertsDir: t.TempDir()}
			tt.setup(t, r, srv.Host)
			_, _, err := r.Resolve(context.Background(), ref)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTLSPerHost checks that one registry's --insecure-registry does not
// make another host's TLS unverified.
func TestTLSPerHost(t *testing.T) {
	ca := registrytest.NewCA(t)
	a := registrytest.Serve(t, registrytest.ServerOptions{TLS: ca.ServerTLS(t)})
	b := registrytest.Serve(t, registrytest.ServerOptions{TLS: ca.ServerTLS(t)})
	refB := pushRandom(t, b.Host, "b/app:1", &Resolver{Insecure: []string{b.Host}})
	r := &Resolver{Insecure: []string{a.Host}, CertsDir: t.TempDir()}
	if _, _, err := r.Resolve(context.Background(), refB); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("pulling from %s with only %s insecure: %v", b.Host, a.Host, err)
	}
	// The hint names the directory to put the CA in.
	_, _, err := r.Resolve(context.Background(), refB)
	if want := filepath.Join(r.CertsDir, b.Host, "ca.crt"); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say to install the CA as %s", err, want)
	}
}
