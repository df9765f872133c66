package trace

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodGet {
			io.WriteString(w, strings.Repeat("x", 1000))
		}
	}))
	defer srv.Close()
	client := &http.Client{Transport: Transport(http.DefaultTransport)}

	r := New()
	ctx, root := Start(With(context.Background(), r), "push")
	for _, tt := range []struct{ method, path, body string }{
		{http.MethodHead, "/v2/app/blobs/sha256:aa", ""},
		{http.MethodPatch, "/v2/app/blobs/uploads/123", "0123456789"},
		{http.MethodGet, "/v2/app/blobs/sha256:aa", ""},
		{http.MethodPut, "/v2/app/manifests/1", "{}"},
	} {
		req, err := http.NewRequestWithContext(ctx, tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if tt.body == "" {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Without a recorder: passed through, nothing recorded.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	root.End()

	m := byName(write(t, r))
	if len(m) != 5 {
		t.Fatalf("got spans %v, want push and 4 requests", m)
	}
	for _, tt := range []struct {
		name, key string
		want      float64
	}{
		{"HEAD blob", "status", 200},
		{"PATCH blob upload", "bytes sent", 10},
		{"GET blob", "bytes received", 1000},
		{"PUT manifest", "bytes sent", 2},
	} {
		e, ok := m[tt.name]
		if !ok {
			t.Errorf("no %q span", tt.name)
			continue
		}
		if e.Args[tt.key] != tt.want {
			t.Errorf("%s: %s = %v, want %v", tt.name, tt.key, e.Args[tt.key], tt.want)
		}
		if e.Parent() != m["push"].ID() || !within(e, m["push"]) {
			t.Errorf("%s is not within push", tt.name)
		}
	}
}
