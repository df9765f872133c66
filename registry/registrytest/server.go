package registrytest

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// ServerOptions shape an in-process registry.
type ServerOptions struct {
	// TLS, when set, serves HTTPS with this config.
	TLS *tls.Config
	// User and Password require authentication: basic, or a token
	// exchange when Bearer is set.
	User, Password string
	Bearer         bool
	// RedirectBlobs answers blob GETs with a redirect to another server, as
	// registries backed by object storage do.
	RedirectBlobs bool
	// Realm, when set, is the token realm Bearer challenges announce
	// (default SCHEME://HOST/token, served by the registry itself).
	Realm string
	// BlobURL, when set, is where blob GETs are redirected to (a base URL
	// the path is appended to), instead of the blob server's own URL:
	// tests use it to name the blob server by another host or scheme.
	BlobURL string
	// PlainBlobs serves the blob server over plain HTTP even when the
	// registry has TLS.
	PlainBlobs bool
}

// Request is one request a Server saw.
type Request struct {
	Method, Path, Query string
	// Authorization is the header as received.
	Authorization string
}

// Server is go-containerregistry's in-process registry behind the options'
// authentication and redirects, recording every request.
type Server struct {
	// Host is 127.0.0.1:PORT of the registry.
	Host string
	// BlobHost is 127.0.0.1:PORT of the blob server, with RedirectBlobs.
	BlobHost string

	mu       sync.Mutex
	requests []Request
	blobReqs []Request
}

const testToken = "kiln-test-token"

var quiet = log.New(io.Discard, "", 0)

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)

// Serve starts a Server for the test.
func Serve(t testing.TB, o ServerOptions) *Server {
	t.Helper()
	s := &Server{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))

	var blobSrv *httptest.Server
	if o.RedirectBlobs {
		blobSrv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			s.blobReqs = append(s.blobReqs, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Authorization: r.Header.Get("Authorization")})
			s.mu.Unlock()
			inner.ServeHTTP(w, r)
		}))
		blobSrv.Config.ErrorLog = quiet
		if o.TLS != nil && !o.PlainBlobs {
			blobSrv.TLS = o.TLS
			blobSrv.StartTLS()
		} else {
			blobSrv.Start()
		}
		t.Cleanup(blobSrv.Close)
		s.BlobHost = strings.TrimPrefix(strings.TrimPrefix(blobSrv.URL, "https://"), "http://")
	}

	srv := httptest.NewUnstartedServer(nil)
	// Handshake failures are what the TLS tests provoke.
	srv.Config.ErrorLog = quiet
	scheme := "http"
	if o.TLS != nil {
		scheme = "https"
	}
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Authorization: r.Header.Get("Authorization")})
		s.mu.Unlock()
		if o.User != "" {
			if o.Bearer && r.URL.Path == "/token" {
				u, p, ok := r.BasicAuth()
				if !ok || u != o.User || p != o.Password {
					unauthorized(w, `Basic realm="kiln-test"`)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"token":"`+testToken+`"}`)
				return
			}
			if !s.authorized(r, o) {
				challenge := `Basic realm="kiln-test"`
				if o.Bearer {
					realm := scheme + "://" + r.Host + "/token"
					if o.Realm != "" {
						realm = o.Realm
					}
					challenge = `Bearer realm="` + realm + `",service="kiln-test"`
				}
				unauthorized(w, challenge)
				return
			}
		}
		if blobSrv != nil && r.Method == http.MethodGet && blobPath.MatchString(r.URL.Path) {
			to := blobSrv.URL
			if o.BlobURL != "" {
				to = o.BlobURL
			}
			http.Redirect(w, r, to+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		inner.ServeHTTP(w, r)
	})
	if o.TLS != nil {
		srv.TLS = o.TLS
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	s.Host = strings.TrimPrefix(strings.TrimPrefix(srv.URL, "https://"), "http://")
	return s
}

func (s *Server) authorized(r *http.Request, o ServerOptions) bool {
	if o.Bearer {
		return r.Header.Get("Authorization") == "Bearer "+testToken
	}
	u, p, ok := r.BasicAuth()
	return ok && u == o.User && p == o.Password
}

func unauthorized(w http.ResponseWriter, challenge string) {
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
}

// Requests returns the requests the registry saw.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// BlobRequests returns the requests the blob server saw.
func (s *Server) BlobRequests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.blobReqs...)
}
