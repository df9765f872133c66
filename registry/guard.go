package registry

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
)

// guard is the outermost policy of kiln's registry transport: every request
// go-containerregistry makes (pings, token fetches from a WWW-Authenticate
// realm, manifests, blobs, each hop of a redirect) passes here, so the
// rules hold whatever path the library takes.
//
// Plain HTTP is refused unless the host is loopback or the user allowed it
// (--insecure-registry, http/insecure in kiln.toml). go-containerregistry
// alone would try http:// for any RFC 1918 address or *.localhost name
// when HTTPS fails, and send credentials over it; a token realm or a
// redirect could also point at http:// on another host. The refusal comes
// before any connection is made.
//
// Manifest bodies are read through a limit: go-containerregistry buffers
// a manifest whole (up to 100 MiB) before looking at it.
type guard struct {
	inner     http.RoundTripper
	allowHTTP func(host string) bool
	limits    Limits
}

// manifestPath matches the distribution API's manifest URLs.
var manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !g.allowHTTP(req.URL.Host) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &PlainHTTPError{Host: req.URL.Host, Scheme: req.URL.Scheme}
	}
	resp, err := g.inner.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK || !manifestPath.MatchString(req.URL.Path) {
		return resp, err
	}
	tooLarge := &TooLargeError{
		What:    "manifest",
		Where:   req.URL.Host + req.URL.Path,
		Size:    resp.ContentLength,
		Limit:   int64(g.limits.ManifestSize),
		Setting: "manifest-size under [limits] in " + ConfigPath(),
	}
	if resp.ContentLength > int64(g.limits.ManifestSize) {
		resp.Body.Close()
		return nil, tooLarge
	}
	tooLarge.Size = -1 // unknown until read
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: int64(g.limits.ManifestSize), err: tooLarge}
	return resp, nil
}

// isLoopback reports whether host (HOST or HOST:PORT) names this machine
// by a name that cannot lead elsewhere: 127.0.0.0/8, ::1 or localhost.
// Other names that resolve to loopback, and *.localhost, are not trusted:
// what a name resolves to is not the user's statement.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// PlainHTTPError is a request kiln refused to send unencrypted.
type PlainHTTPError struct {
	// Host is HOST[:PORT] of the refused URL: a registry, or the token
	// server or blob store a registry sent kiln to.
	Host   string
	Scheme string
}

func (e *PlainHTTPError) Error() string {
	if e.Scheme != "http" {
		return fmt.Sprintf("refusing to reach %s over %q: registries are reached over https (or http where allowed)", e.Host, e.Scheme)
	}
	return fmt.Sprintf("refusing plain HTTP to %s: credentials and images would cross the network unencrypted, and kiln uses http:// only for loopback registries and those the user allows; if %s serves only plain HTTP, allow it with --insecure-registry %s or with http = true under [registry.%q] in %s",
		e.Host, e.Host, e.Host, e.Host, ConfigPath())
}
