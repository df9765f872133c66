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
	"syscall"
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

// retrying sends a request again when the connection broke or the
// registry answered 408, 429 or 502–504, waiting out a 429's Retry-After
// (up to max) or else backing off from base, at most tries more times.
//
// It sits under go-containerregistry's own retries, which stop at the
// transport for the requests of a blob upload (retry.Never) and restart the
// whole upload instead: with a flaky load balancer in front, a four-request
// upload then fails far more often than any one request. Here only the
// failed request is repeated, and only when that is safe: its body can be
// replayed (GetBody), and repeating it cannot do harm in the registry
// protocol (a second upload session is abandoned and purged; a repeated
// commit of a finished upload fails and the upload is retried above, where
// the HEAD finds the blob). A streamed blob body cannot be replayed and
// goes back up unchanged.
type retrying struct {
	inner http.RoundTripper
	tries int
	base  time.Duration
	max   time.Duration
	now   func() time.Time
}

func (t *retrying) RoundTrip(req *http.Request) (*http.Response, error) {
	for i := 0; ; i++ {
		resp, err := t.inner.RoundTrip(req)
		if i >= t.tries || !replayable(req) {
			return resp, err
		}
		wait := t.base << (2 * i) // ×4 each time
		switch {
		case err != nil:
			if !transient(err) {
				return resp, err
			}
		case resp.StatusCode == http.StatusTooManyRequests:
			if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now()); ok {
				if d > t.max {
					return resp, nil
				}
				wait = d
			}
		case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusBadGateway,
			resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		default:
			return resp, nil
		}
		if resp != nil {
			// Drain a little so the connection can be reused.
			io.CopyN(io.Discard, resp.Body, 64<<10)
			resp.Body.Close()
		}
		if err := sleep(req.Context(), wait); err != nil {
			return nil, err
		}
		if req, err = rewind(req); err != nil {
			return nil, err
		}
	}
}

func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// rewind returns req with a fresh copy of its body.
func rewind(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Body = body
	return r, nil
}

// transient reports a connection that broke under the request. A refused
// connection is not: nothing listens there, and a dead mirror must be
// skipped at once.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
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
