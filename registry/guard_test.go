package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/registry/registrytest"
)

// routedTransport is a base transport for tests that names registries by
// hosts that are not this machine (10.1.2.3:5000, auth.example.test) and
// still never sends a packet anywhere but loopback: a dial of a name in
// routes goes to its loopback address instead, and any other non-loopback
// dial fails the test without being made. It records the scheme and host
// of every request that reaches it, that is every request the guard let
// through.
type routedTransport struct {
	tr *http.Transport

	mu   sync.Mutex
	seen []string
}

func newRouted(t *testing.T, routes map[string]string, roots *x509.CertPool) *routedTransport {
	return &routedTransport{tr: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := routes[addr]; ok {
				addr = to
			}
			host, _, _ := net.SplitHostPort(addr)
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				t.Errorf("the test transport was asked to dial %s, outside loopback", addr)
				return nil, fmt.Errorf("test: not dialing %s", addr)
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
}

func (r *routedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.seen = append(r.seen, req.URL.Scheme+"://"+req.URL.Host)
	r.mu.Unlock()
	return r.tr.RoundTrip(req)
}

// reached reports whether a request to url (SCHEME://HOST) got past the
// guard.
func (r *routedTransport) reached(url string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.seen {
		if s == url {
			return true
		}
	}
	return false
}

// readLayers reads every layer of img to its end.
func readLayers(img v1.Image) error {
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func authorizedRequests(s *registrytest.Server) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Authorization != "" {
			n++
		}
	}
	return n
}

// TestPlainHTTPGuard names a loopback registry (plain HTTP, basic auth) by
// private-range and *.localhost names, which go-containerregistry would
// reach over http:// once HTTPS fails, credentials included: kiln must
// refuse before connecting unless the user allowed that host.
func TestPlainHTTPGuard(t *testing.T) {
	srv := registrytest.Serve(t, registrytest.ServerOptions{User: "u", Password: "p"})
	pushRandom(t, srv.Host, "app:1", &Resolver{Keychain: staticKeychain{srv.Host, "u", "p"}})

	tests := []struct {
		name    string
		host    string
		allow   func(r *Resolver, host string)
		refused bool
	}{
		{name: "private range", host: "10.1.2.3:5000", refused: true},
		{name: "192.168/16", host: "192.168.7.7:5000", refused: true},
		{name: "*.localhost", host: "kiln.localhost:5000", refused: true},
		{name: "http for another port", host: "10.1.2.3:5000", refused: true, allow: func(r *Resolver, host string) {
			r.Config.Registry = map[string]HostConfig{"10.1.2.3:5001": {HTTP: true}}
		}},
		{name: "--insecure-registry", host: "10.1.2.3:5000", allow: func(r *Resolver, host string) {
			r.Insecure = []string{host}
		}},
		{name: "http = true", host: "10.1.2.3:5000", allow: func(r *Resolver, host string) {
			r.Config.Registry = map[string]HostConfig{host: {HTTP: true}}
		}},
		{name: "insecure = true", host: "kiln.localhost:5000", allow: func(r *Resolver, host string) {
			r.Config.Registry = map[string]HostConfig{host: {Insecure: true}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := newRouted(t, map[string]string{tt.host: srv.Host}, nil)
			r := &Resolver{Transport: rt, Keychain: staticKeychain{tt.host, "u", "p"}, Backoff: fastBackoff}
			if tt.allow != nil {
				tt.allow(r, tt.host)
			}
			before := authorizedRequests(srv)
			img, _, err := r.Resolve(context.Background(), tt.host+"/app:1")
			if err == nil {
				err = readLayers(img)
			}
			loginErr := r.CheckLogin(context.Background(), tt.host, "u", "p")
			if !tt.refused {
				if err != nil || loginErr != nil {
					t.Fatalf("allowed plain HTTP: pull %v, login %v", err, loginErr)
				}
				if !rt.reached("http://" + tt.host) {
					t.Error("no request went over plain HTTP, yet the pull worked")
				}
				return
			}
			for what, err := range map[string]error{"pull": err, "login": loginErr} {
				var pe *PlainHTTPError
				if !errors.As(err, &pe) || pe.Host != tt.host {
					t.Errorf("%s: error %v, want plain HTTP to %s refused", what, err, tt.host)
					continue
				}
				if !strings.Contains(err.Error(), "--insecure-registry "+tt.host) || !strings.Contains(err.Error(), "http = true") {
					t.Errorf("%s: error %q does not say how to allow it", what, err)
				}
			}
			if rt.reached("http://" + tt.host) {
				t.Error("a plain HTTP request got past the guard")
			}
			if n := authorizedRequests(srv) - before; n != 0 {
				t.Errorf("the registry received %d requests with credentials", n)
			}
		})
	}
}

// TestTokenRealmGuard has a loopback registry (plain HTTP is allowed to
// it) send kiln to a token server over http:// on another host: the
// credentials would go there in clear, so the token fetch is refused unless
// that host is allowed too.
func TestTokenRealmGuard(t *testing.T) {
	const authHost = "auth.example.test"
	srv := registrytest.Serve(t, registrytest.ServerOptions{User: "u", Password: "p", Bearer: true, Realm: "http://" + authHost + "/token"})
	routes := map[string]string{authHost + ":80": srv.Host}
	allowAuth := Config{Registry: map[string]HostConfig{authHost: {HTTP: true}}}
	keys := staticKeychain{srv.Host, "u", "p"}
	pushRandom(t, srv.Host, "app:1", &Resolver{Transport: newRouted(t, routes, nil), Config: allowAuth, Keychain: keys})

	t.Run("refused", func(t *testing.T) {
		rt := newRouted(t, routes, nil)
		r := &Resolver{Transport: rt, Keychain: keys, Backoff: fastBackoff}
		_, _, err := r.Resolve(context.Background(), srv.Host+"/app:1")
		var pe *PlainHTTPError
		if !errors.As(err, &pe) || pe.Host != authHost {
			t.Fatalf("pull: %v, want the http:// token realm refused", err)
		}
		if err := r.CheckLogin(context.Background(), srv.Host, "u", "p"); !errors.As(err, &pe) {
			t.Errorf("login: %v, want the http:// token realm refused", err)
		}
		if rt.reached("http://" + authHost) {
			t.Error("the token request got past the guard")
		}
	})
	t.Run("allowed", func(t *testing.T) {
		rt := newRouted(t, routes, nil)
		r := &Resolver{Transport: rt, Keychain: keys, Config: allowAuth}
		img, _, err := r.Resolve(context.Background(), srv.Host+"/app:1")
		if err == nil {
			err = readLayers(img)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := r.CheckLogin(context.Background(), srv.Host, "u", "p"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRedirectGuard has an HTTPS registry redirect blob downloads to
// http://: refused unless the blob host is loopback or allowed.
func TestRedirectGuard(t *testing.T) {
	const blobHost = "blobs.example.test"
	ca := registrytest.NewCA(t)
	tests := []struct {
		name string
		// blobURL is where the registry redirects blob downloads; empty
		// is its plain HTTP blob server on loopback.
		blobURL string
		config  Config
		refused bool
	}{
		{name: "to http on another host", blobURL: "http://" + blobHost, refused: true},
		{name: "to http on an allowed host", blobURL: "http://" + blobHost,
			config: Config{Registry: map[string]HostConfig{blobHost: {HTTP: true}}}},
		{name: "to http on loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := registrytest.Serve(t, registrytest.ServerOptions{TLS: ca.ServerTLS(t), RedirectBlobs: true, PlainBlobs: true, BlobURL: tt.blobURL})
			rt := newRouted(t, map[string]string{blobHost + ":80": srv.BlobHost}, ca.Pool())
			pushRandom(t, srv.Host, "app:1", &Resolver{Transport: rt})
			r := &Resolver{Transport: rt, Config: tt.config, Backoff: fastBackoff}
			img, _, err := r.Resolve(context.Background(), srv.Host+"/app:1")
			if err != nil {
				t.Fatal(err)
			}
			err = readLayers(img)
			if !tt.refused {
				if err != nil {
					t.Fatal(err)
				}
				if len(srv.BlobRequests()) == 0 {
					t.Error("the blob server saw no request")
				}
				return
			}
			var pe *PlainHTTPError
			if !errors.As(err, &pe) || pe.Host != blobHost {
				t.Fatalf("reading layers: %v, want the redirect to http:// refused", err)
			}
			if rt.reached("http://"+blobHost) || len(srv.BlobRequests()) != 0 {
				t.Error("a blob request went over plain HTTP")
			}
		})
	}
}
