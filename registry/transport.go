package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultCertsDir is Docker's directory of per-registry TLS files:
// HOST[:PORT]/*.crt are extra CAs, HOST[:PORT]/NAME.cert with NAME.key a
// client certificate. $KILN_CERTS_DIR replaces it (tests, rootless use).
const DefaultCertsDir = "/etc/docker/certs.d"

func certsDir() string {
	if d := os.Getenv("KILN_CERTS_DIR"); d != "" {
		return d
	}
	return DefaultCertsDir
}

// hostTransport sends each request through a transport whose TLS settings
// are those of the request's host: requests to a token server or a blob
// store a registry redirects to get that host's settings, never the
// registry's (an insecure registry must not make its CDN insecure too).
type hostTransport struct {
	certsDir string
	settings func(host string) HostConfig
	insecure func(host string) bool

	mu     sync.Mutex
	byHost map[string]*http.Transport
	plain  *http.Transport
}

func newHostTransport(certsDir string, settings func(string) HostConfig, insecure func(string) bool) *hostTransport {
	return &hostTransport{certsDir: certsDir, settings: settings, insecure: insecure, byHost: map[string]*http.Transport{}}
}

// baseTransport has go-containerregistry's defaults (keep-alives, timeouts,
// proxy from the environment), without sharing its connection pool.
func baseTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   50,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
}

func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, err := t.forHost(req.URL.Host)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return rt.RoundTrip(req)
}

func (t *hostTransport) forHost(host string) (*http.Transport, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rt, ok := t.byHost[host]; ok {
		return rt, nil
	}
	cfg, err := t.tlsConfig(host)
	if err != nil {
		return nil, fmt.Errorf("loading TLS settings for %s: %w", host, err)
	}
	if cfg == nil {
		if t.plain == nil {
			t.plain = baseTransport()
		}
		t.byHost[host] = t.plain
		return t.plain, nil
	}
	rt := baseTransport()
	rt.TLSClientConfig = cfg
	t.byHost[host] = rt
	return rt, nil
}

// tlsConfig returns the TLS settings for host, or nil when the defaults
// (system roots, no client certificate) apply.
func (t *hostTransport) tlsConfig(host string) (*tls.Config, error) {
	hc := t.settings(host)
	cas := append([]string(nil), hc.CA...)
	pairs := append([]KeyPair(nil), hc.KeyPairs...)
	if t.certsDir != "" {
		c, p, err := readCertsDir(filepath.Join(t.certsDir, host))
		if err != nil {
			return nil, err
		}
		cas, pairs = append(cas, c...), append(pairs, p...)
	}
	skip := t.insecure(host)
	if len(cas) == 0 && len(pairs) == 0 && !skip {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skip}
	if len(cas) > 0 {
		// Extra CAs add to the system's, as with Docker: a registry moving
		// to a public certificate keeps working.
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, f := range cas {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("reading CA certificate: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("reading CA certificate %s: no PEM certificate in it", f)
			}
		}
		cfg.RootCAs = pool
	}
	for _, kp := range pairs {
		cert, err := tls.LoadX509KeyPair(kp.Cert, kp.Key)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate %s: %w", kp.Cert, err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	return cfg, nil
}

// readCertsDir reads one HOST[:PORT] directory in Docker's certs.d layout.
// A missing directory is no error: most registries have none.
func readCertsDir(dir string) (cas []string, pairs []KeyPair, err error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range ents {
		n := e.Name()
		switch filepath.Ext(n) {
		case ".crt":
			cas = append(cas, filepath.Join(dir, n))
		case ".cert":
			key := strings.TrimSuffix(n, ".cert") + ".key"
			if _, err := os.Stat(filepath.Join(dir, key)); err != nil {
				return nil, nil, fmt.Errorf("client certificate %s has no key %s beside it", filepath.Join(dir, n), key)
			}
			pairs = append(pairs, KeyPair{Cert: filepath.Join(dir, n), Key: filepath.Join(dir, key)})
		case ".key":
			cert := strings.TrimSuffix(n, ".key") + ".cert"
			if _, err := os.Stat(filepath.Join(dir, cert)); err != nil {
				return nil, nil, fmt.Errorf("client key %s has no certificate %s beside it", filepath.Join(dir, n), cert)
			}
		}
	}
	return cas, pairs, nil
}

// retryAfter waits out a 429's Retry-After and sends the request again,
// up to tries times and never waiting longer than max at once. It sits
// under go-containerregistry's retrying transport, whose fixed backoff
// knows nothing of Retry-After; a request whose body cannot be replayed
// (a streamed blob) goes back up unchanged, and the whole upload is
// retried there.
type retryAfter struct {
	inner http.RoundTripper
	tries int
	max   time.Duration
	now   func() time.Time
}

func (t *retryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	for i := 0; ; i++ {
		resp, err := t.inner.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || i >= t.tries {
			return resp, err
		}
		wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now())
		if !ok || wait > t.max {
			return resp, nil
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return resp, nil
			}
			body, err := req.GetBody()
			if err != nil {
				return resp, nil
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
		// Drain a little so the connection can be reused.
		io.CopyN(io.Discard, resp.Body, 64<<10)
		resp.Body.Close()
		if err := sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	when, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(when.Sub(now), 0), true
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
