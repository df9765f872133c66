package trace

import (
	"io"
	"net/http"
	"strings"
	"sync"
)

// Transport returns rt with a span per request whose context carries a
// Recorder: registry traffic (each blob's existence check, upload, mount or
// download, each manifest) shows in the trace under the phase that caused
// it. A response body's span ends when the body is read to its end or
// closed, so a download's span covers its bytes. Without a Recorder in the
// request's context a request costs one context lookup more.
func Transport(rt http.RoundTripper) http.RoundTripper {
	return &transport{inner: rt}
}

type transport struct{ inner http.RoundTripper }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !Enabled(req.Context()) {
		return t.inner.RoundTrip(req)
	}
	_, span := Start(req.Context(), req.Method+" "+kind(req.URL.Path))
	span.SetString("url", req.URL.Host+req.URL.Path)
	if q := req.URL.RawQuery; strings.Contains(q, "digest=") || strings.Contains(q, "mount=") {
		span.SetString("query", req.URL.RawQuery)
	}
	if req.ContentLength > 0 {
		span.SetInt("bytes sent", req.ContentLength)
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		span.SetError(err)
		span.End()
		return nil, err
	}
	span.SetInt("status", int64(resp.StatusCode))
	if req.Method == http.MethodHead || resp.Body == nil || resp.Body == http.NoBody {
		span.End()
		return resp, nil
	}
	resp.Body = &tracedBody{ReadCloser: resp.Body, span: span}
	return resp, nil
}

// kind names what a registry API path is about (distribution spec paths:
// /v2/NAME/blobs/DIGEST, /v2/NAME/blobs/uploads/…, /v2/NAME/manifests/REF).
func kind(path string) string {
	switch {
	case strings.Contains(path, "/blobs/uploads"):
		return "blob upload"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	case path == "/v2/" || path == "/v2":
		return "registry ping"
	case strings.Contains(path, "/tags/list"):
		return "tag list"
	}
	return "registry request"
}

// tracedBody ends its request's span at EOF or Close, whichever is first,
// with the bytes read.
type tracedBody struct {
	io.ReadCloser
	span *Span
	n    int64
	once sync.Once
}

func (b *tracedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *tracedBody) Close() error {
	b.end()
	return b.ReadCloser.Close()
}

func (b *tracedBody) end() {
	b.once.Do(func() {
		b.span.SetInt("bytes received", b.n)
		b.span.End()
	})
}
