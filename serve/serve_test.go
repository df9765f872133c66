package serve

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// staticBackend answers with fixed values: these tests are about routing
// and negotiation; the real backend is driven by cmd/kiln's tests.
type staticBackend struct{}

func (staticBackend) Version() Version { return NewVersion("v0.0.0-test", "abc", "") }
func (staticBackend) Info(context.Context) (Info, error) {
	i := NewInfo()
	i.Images = 3
	return i, nil
}

func TestRouting(t *testing.T) {
	s := New(staticBackend{})
	for _, tc := range []struct {
		method, path string
		code         int
		body         string // a substring of the body
	}{
		{"GET", "/_ping", 200, "OK"},
		{"GET", "/v1.41/_ping", 200, "OK"},
		{"HEAD", "/_ping", 200, ""},
		{"GET", "/v1.24/version", 200, `"ApiVersion":"1.41"`},
		{"GET", "/version", 200, `"Name":"kiln"`},
		{"GET", "/v1.40/info", 200, `"Images":3`},
		{"GET", "/v1.42/version", 400, "client version 1.42 is too new. Maximum supported API version is 1.41"},
		{"GET", "/v1.23/version", 400, "client version 1.23 is too old. Minimum supported API version is 1.24"},
		{"GET", "/v1.41/containers/json", 501, "kiln serves builds and images only: GET /containers/json is not implemented"},
		{"POST", "/networks/create", 501, "POST /networks/create is not implemented"},
		{"DELETE", "/v1.41/volumes/x", 501, "kiln serves builds and images only"},
		{"POST", "/exec/abc/start", 501, "kiln serves builds and images only"},
		{"POST", "/version", 501, "POST /version is not implemented"},
		{"GET", "/nothing/here", 404, `{"message":"page not found"}`},
		{"GET", "/v1.x/version", 404, "page not found"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
				t.Fatalf("%s %s: got %d %q, want %d with %q", tc.method, tc.path, w.Code, w.Body, tc.code, tc.body)
			}
			if got := w.Header().Get("API-Version"); got != MaxAPIVersion {
				t.Errorf("API-Version header %q, want %s", got, MaxAPIVersion)
			}
			if tc.code >= 400 {
				var m struct{ Message string }
				if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || m.Message == "" {
					t.Errorf("error body %q is not dockerd's {\"message\":...}: %v", w.Body, err)
				}
			}
		})
	}
}

func TestPingHeaders(t *testing.T) {
	s := New(staticBackend{})
	for _, method := range []string{"GET", "HEAD"} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(method, "/_ping", nil))
		for k, want := range map[string]string{
			"API-Version": MaxAPIVersion, "Builder-Version": "1", "OSType": "linux",
			"Docker-Experimental": "false", "Pragma": "no-cache",
		} {
			if got := w.Header().Get(k); got != want {
				t.Errorf("%s /_ping: %s %q, want %q", method, k, got, want)
			}
		}
		if !strings.Contains(w.Header().Get("Cache-Control"), "no-cache") {
			t.Errorf("%s /_ping: Cache-Control %q, want no-cache", method, w.Header().Get("Cache-Control"))
		}
	}
}

func TestRouteVars(t *testing.T) {
	s := &Server{backend: staticBackend{}}
	var got map[string]string
	h := func(w http.ResponseWriter, r *http.Request, vars map[string]string) error { got = vars; return nil }
	s.handle("GET", "/images/{name:*}/json", h)
	s.handle("POST", "/images/{name:*}/tag", h)
	s.handle("GET", "/exec/{id}/json", h)
	for _, tc := range []struct{ method, path, key, want string }{
		{"GET", "/v1.41/images/registry.example.com:5000/team/app:1.4/json", "name", "registry.example.com:5000/team/app:1.4"},
		{"POST", "/images/busybox/tag", "name", "busybox"},
		{"GET", "/exec/abc/json", "id", "abc"},
	} {
		got = nil
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if got[tc.key] != tc.want {
			t.Errorf("%s %s: %s=%q, want %q (answer %d %s)", tc.method, tc.path, tc.key, got[tc.key], tc.want, w.Code, w.Body)
		}
	}
}

func TestParseHost(t *testing.T) {
	for _, tc := range []struct {
		host    string
		tls     bool
		want    Endpoint
		wantErr string
	}{
		{"unix:///run/kiln/kiln.sock", false, Endpoint{"unix", "/run/kiln/kiln.sock"}, ""},
		{"tcp://127.0.0.1:2375", false, Endpoint{"tcp", "127.0.0.1:2375"}, ""},
		{"tcp://127.0.0.1", false, Endpoint{"tcp", "127.0.0.1:2375"}, ""},
		{"tcp://127.0.0.1", true, Endpoint{"tcp", "127.0.0.1:2376"}, ""},
		{"tcp://[::1]:0", false, Endpoint{"tcp", "[::1]:0"}, ""},
		{"unix://relative.sock", false, Endpoint{}, "must be absolute"},
		{"/run/kiln.sock", false, Endpoint{}, "give unix:///PATH or tcp://HOST:PORT"},
		{"ssh://host", false, Endpoint{}, "unix:// and tcp:// addresses only"},
		{"tcp://127.0.0.1:2375/path", false, Endpoint{}, "no path"},
	} {
		got, err := ParseHost(tc.host, tc.tls)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseHost(%q): error %v, want one with %q", tc.host, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseHost(%q) = %+v, %v; want %+v", tc.host, got, err, tc.want)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:2375": true, "[::1]:2375": true, "127.1.2.3:1": true, "localhost:2375": true,
		":2375": false, "0.0.0.0:2375": false, "[::]:2375": false, "192.0.2.1:2375": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.41", "1.41", 0}, {"1.9", "1.41", -1}, {"1.100", "1.41", 1}, {"2", "1.41", 1}, {"1.41.0", "1.41", 0},
	} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
