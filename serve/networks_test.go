package serve

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNetworkLookup: looking a network up gets dockerd's 404 (compose
// goes on building after it); every other network endpoint stays 501.
func TestNetworkLookup(t *testing.T) {
	s := New(staticBackend{})
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/v1.41/networks/proj_default", 404, "network proj_default not found"},
		{"GET", "/networks/abc", 404, "network abc not found"},
		{"GET", "/networks", 501, "GET /networks is not implemented"},
		{"POST", "/v1.41/networks/create", 501, "POST /networks/create is not implemented"},
		{"DELETE", "/networks/abc", 501, "DELETE /networks/abc is not implemented"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
				t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, w.Code, w.Body, tc.code, tc.body)
			}
		})
	}
}
