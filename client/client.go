// Package client is kiln's Docker Engine API client: what `kiln --host`
// (or KILN_HOST) uses to send build, images, push, prune and version to a
// kiln serve, or to any server speaking the Engine API 1.41, over a unix
// socket or tcp (with TLS). It encodes requests as the docker CLI does
// and decodes the JSON message stream that build and push answer with;
// it knows nothing of how kiln builds.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/kiln-build/kiln/serve"
)

// APIVersion is the Engine API version every request is made with, in
// its path (/v1.41/…): what kiln serve and dockerd 20.10 speak.
const APIVersion = "1.41"

// Options say where the server is.
type Options struct {
	// Host is unix:///PATH or tcp://HOST[:PORT] (port 2375, or 2376 with
	// TLS, when left out).
	Host string
	// TLSCACert, TLSCert and TLSKey are PEM files. Any of them makes a
	// tcp connection TLS; the CA verifies the server (default: the
	// system's roots), the certificate and key are the client's.
	TLSCACert, TLSCert, TLSKey string
	// UserAgent is sent with every request.
	UserAgent string
}

// Client talks to one Engine API server. Build it with New.
type Client struct {
	hc        *http.Client
	base      string // scheme://authority, without the version prefix
	host      string // as given, for messages
	userAgent string
}

// New returns a client for o.Host. Nothing is dialled until a request.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.Host)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("--host %q: want unix:///PATH or tcp://HOST[:PORT]", o.Host)
	}
	useTLS := o.TLSCACert != "" || o.TLSCert != "" || o.TLSKey != ""
	tr := &http.Transport{DisableCompression: true}
	c := &Client{hc: &http.Client{Transport: tr}, host: o.Host, userAgent: o.UserAgent}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if u.Host != "" {
			path = u.Host + u.Path // unix://relative/path
		}
		if path == "" {
			return nil, fmt.Errorf("--host %q: a unix socket needs a path: unix:///run/kiln/kiln.sock", o.Host)
		}
		if useTLS {
			return nil, fmt.Errorf("--host %q: --tlscacert, --tlscert and --tlskey are for tcp:// hosts; a unix socket needs none", o.Host)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
		// The authority is a placeholder: the socket is the address.
		c.base = "http://kiln"
	case "tcp", "http", "https":
		if u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("--host %q: want tcp://HOST[:PORT]", o.Host)
		}
		if u.Scheme == "https" {
			useTLS = true
		}
		hostport := u.Host
		if u.Port() == "" {
			port := "2375"
			if useTLS {
				port = "2376"
			}
			hostport = net.JoinHostPort(u.Hostname(), port)
		}
		scheme := "http"
		if useTLS {
			cfg, err := tlsConfig(o)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = cfg
			scheme = "https"
		}
		c.base = scheme + "://" + hostport
	default:
		return nil, fmt.Errorf("--host %q: unknown scheme %s: use unix:///PATH or tcp://HOST[:PORT]", o.Host, u.Scheme)
	}
	return c, nil
}

func tlsConfig(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSCACert != "" {
		pem, err := os.ReadFile(o.TLSCACert)
		if err != nil {
			return nil, fmt.Errorf("reading --tlscacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading --tlscacert %s: no PEM certificate in it", o.TLSCACert)
		}
		cfg.RootCAs = pool
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("--tlscert and --tlskey go together: give both, or neither")
	}
	if o.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate (--tlscert, --tlskey): %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Host is the server's address as given.
func (c *Client) Host() string { return c.host }

// Error is an answer other than 2xx: dockerd's {"message": …} with its
// status.
type Error struct {
	StatusCode int
	Method     string
	Path       string
	Message    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// NotImplemented reports whether err is the server answering 501: it
// does not serve that endpoint.
func NotImplemented(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotImplemented
}

// request is one call: path is unversioned ("/build").
type request struct {
	method string
	path   string
	query  url.Values
	header http.Header
	body   io.Reader
}

// do sends r and returns the response when it is 2xx; the caller closes
// its body. Any other status is an *Error.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	u := c.base + "/v" + APIVersion + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, r.body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is a placeholder for a unix socket
		}
		return nil, fmt.Errorf("connecting to %s: %w (is kiln serve running there? check --host or KILN_HOST)", c.host, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{StatusCode: resp.StatusCode, Method: r.method, Path: r.path}
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		e.Message = m.Message
	} else {
		e.Message = strings.TrimSpace(string(body))
	}
	return nil, e
}

// getJSON GETs path and decodes the answer into v.
func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	return c.callJSON(ctx, request{method: http.MethodGet, path: path, query: q}, v)
}

func (c *Client) callJSON(ctx context.Context, r request, v any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("reading the answer of %s %s from %s: %w", r.method, r.path, c.host, err)
	}
	return nil
}

// Ping asks GET /_ping; it returns the API-Version header.
func (c *Client) Ping(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/_ping"})
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("API-Version"), nil
}

// Version is GET /version's answer (serve.Version).
type Version = serve.Version

// Component is one part of the server in Version.
type Component = serve.Component

// ServerVersion asks GET /version.
func (c *Client) ServerVersion(ctx context.Context) (Version, error) {
	var v Version
	err := c.getJSON(ctx, "/version", nil, &v)
	return v, err
}
