package serve

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// registryStub is a backend whose push and pull report fixed layers:
// these tests are about the messages; cmd/kiln's tests push and pull
// for real.
type registryStub struct {
	staticBackend
	fail error // returned after the layers
	gone bool  // the image is not in the store
	// auth is what the keychain gave for the target registry.
	auth *authn.AuthConfig
}

const (
	layerA = "sha256:aaaaaaaaaaaa0000000000000000000000000000000000000000000000000000"
	layerB = "sha256:bbbbbbbbbbbb0000000000000000000000000000000000000000000000000000"
)

func (b *registryStub) RegistryLogin(ctx context.Context, a AuthConfig) error {
	if a.Password != "right" {
		return fmt.Errorf("logging in to %s: %w", a.ServerAddress, ErrRegistryDenied)
	}
	return nil
}

func (b *registryStub) keychain(ref string, kc authn.Keychain) {
	n, _ := name.ParseReference(ref)
	a, _ := kc.Resolve(n.Context().Registry)
	b.auth, _ = a.Authorization()
}

func (b *registryStub) PushImage(ctx context.Context, ref string, kc authn.Keychain, progress func(LayerProgress)) (Pushed, error) {
	b.keychain(ref, kc)
	if b.gone {
		return Pushed{}, fmt.Errorf("pushing %s: %w", ref, ErrUnknownImage)
	}
	progress(LayerProgress{Digest: layerA, State: LayerWaiting})
	progress(LayerProgress{Digest: layerB, State: LayerWaiting})
	progress(LayerProgress{Digest: layerA, State: LayerTransferring, Current: 0, Total: 10})
	progress(LayerProgress{Digest: layerA, State: LayerTransferring, Current: 10, Total: 10})
	progress(LayerProgress{Digest: layerA, State: LayerDone})
	progress(LayerProgress{Digest: layerA, State: LayerTransferring}) // a retry after done: not shown
	if b.fail != nil {
		return Pushed{}, b.fail
	}
	progress(LayerProgress{Digest: layerB, State: LayerExists})
	return Pushed{Digest: "sha256:cccc", Size: 428}, nil
}

func (b *registryStub) PullImage(ctx context.Context, ref, platform string, kc authn.Keychain, progress func(LayerProgress)) (Pulled, error) {
	b.keychain(ref, kc)
	progress(LayerProgress{Digest: layerA, State: LayerExists})
	progress(LayerProgress{Digest: layerB, State: LayerWaiting})
	progress(LayerProgress{Digest: layerB, State: LayerDone})
	return Pulled{Digest: "sha256:dddd", UpToDate: platform == "linux/amd64"}, nil
}

func authHeader(v string) string { return base64.URLEncoding.EncodeToString([]byte(v)) }

func TestRegistryEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name         string
		backend      registryStub
		method, path string
		auth         string
		code         int
		want         []string // lines of the body, in order (substrings)
		user         string   // the keychain's username for the target
	}{
		{
			name: "push", method: "POST", path: "/v1.41/images/127.0.0.1:5000/team/x/push?tag=1",
			auth: authHeader(`{"username":"ci","password":"pw","serveraddress":"127.0.0.1:5000"}`), code: 200, user: "ci",
			want: []string{
				`{"status":"The push refers to repository [127.0.0.1:5000/team/x]"}`,
				`{"status":"Preparing","progressDetail":{},"id":"aaaaaaaaaaaa"}`,
				`{"status":"Preparing","progressDetail":{},"id":"bbbbbbbbbbbb"}`,
				`{"status":"Pushing","progressDetail":{"total":10},"id":"aaaaaaaaaaaa"}`,
				`{"status":"Pushing","progressDetail":{"current":10,"total":10},"id":"aaaaaaaaaaaa"}`,
				`{"status":"Pushed","progressDetail":{},"id":"aaaaaaaaaaaa"}`,
				`{"status":"Layer already exists","progressDetail":{},"id":"bbbbbbbbbbbb"}`,
				`{"status":"1: digest: sha256:cccc size: 428"}`,
				`{"aux":{"Digest":"sha256:cccc","Size":428,"Tag":"1"}}`,
			},
		},
		{
			name: "push of a Docker Hub name without tag, credentials for another registry", method: "POST", path: "/images/app/push",
			auth: authHeader(`{"username":"ci","password":"pw","serveraddress":"elsewhere.example"}`), code: 200, user: "ci",
			want: []string{`{"status":"The push refers to repository [docker.io/library/app]"}`, `"status":"latest: digest: sha256:cccc size: 428"`},
		},
		{
			name: "anonymous push", method: "POST", path: "/images/127.0.0.1:5000/x/push?tag=1", code: 200,
			want: []string{`The push refers to repository [127.0.0.1:5000/x]`},
		},
		{
			name: "push fails", backend: registryStub{fail: fmt.Errorf("pushing x: authentication to registry 127.0.0.1:5000 failed")},
			method: "POST", path: "/images/127.0.0.1:5000/x/push?tag=1", code: 200,
			want: []string{`The push refers to repository`, `"Pushed"`, `{"errorDetail":{"message":"pushing x: authentication to registry 127.0.0.1:5000 failed"},"error":"pushing x: authentication to registry 127.0.0.1:5000 failed"}`},
		},
		{
			name: "push of an image the store lacks", backend: registryStub{gone: true},
			method: "POST", path: "/images/127.0.0.1:5000/x/push?tag=1", code: 404,
			want: []string{`{"message":"pushing 127.0.0.1:5000/x:1: no such image"}`},
		},
		{name: "push with a malformed X-Registry-Auth", method: "POST", path: "/images/x/push?tag=1", auth: "%%", code: 400, want: []string{"invalid X-Registry-Auth header"}},
		{name: "push of a bad name", method: "POST", path: "/images/UPPER/push?tag=1", code: 400, want: []string{`invalid image name \"UPPER:1\"`}},
		{
			name: "pull", method: "POST", path: "/v1.41/images/create?fromImage=127.0.0.1:5000/x&tag=1",
			auth: authHeader(`{"username":"ci","password":"pw"}`), code: 200, user: "ci",
			want: []string{
				`{"status":"Pulling from x","id":"1"}`,
				`{"status":"Already exists","progressDetail":{},"id":"aaaaaaaaaaaa"}`,
				`{"status":"Pulling fs layer","progressDetail":{},"id":"bbbbbbbbbbbb"}`,
				`{"status":"Pull complete","progressDetail":{},"id":"bbbbbbbbbbbb"}`,
				`{"status":"Digest: sha256:dddd"}`,
				`{"status":"Status: Downloaded newer image for 127.0.0.1:5000/x:1"}`,
			},
		},
		{
			name: "pull of a Docker Hub image, up to date", method: "POST", path: "/images/create?fromImage=library/busybox&tag=latest&platform=linux/amd64", code: 200,
			want: []string{`{"status":"Pulling from library/busybox","id":"latest"}`, `"Status: Image is up to date for busybox:latest"`},
		},
		{name: "pull by digest", method: "POST", path: "/images/create?fromImage=busybox&tag=sha256:" + strings.Repeat("a", 64), code: 400, want: []string{"kiln serve pulls tags, not digests"}},
		{name: "pull with a bad platform", method: "POST", path: "/images/create?fromImage=busybox&platform=linux/what/is/this", code: 400, want: []string{"invalid query parameter platform"}},
		{name: "pull with malformed X-Registry-Auth", method: "POST", path: "/images/create?fromImage=busybox", auth: authHeader("[]"), code: 400, want: []string{"invalid X-Registry-Auth header"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.backend
			s := New(&b)
			w := httptest.NewRecorder()
			r := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.auth != "" {
				r.Header.Set("X-Registry-Auth", tc.auth)
			}
			s.ServeHTTP(w, r)
			body := w.Body.String()
			if w.Code != tc.code {
				t.Fatalf("got %d, want %d:\n%s", w.Code, tc.code, body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			lines := strings.Split(strings.TrimSpace(body), "\n")
			i := 0
			for _, want := range tc.want {
				for i < len(lines) && !strings.Contains(lines[i], want) {
					i++
				}
				if i == len(lines) {
					t.Fatalf("no line with %s (in order) in:\n%s", want, body)
				}
				i++
			}
			for _, l := range lines {
				if !json.Valid([]byte(l)) {
					t.Errorf("not a JSON line: %s", l)
				}
			}
			if tc.code == 200 && (b.auth == nil || b.auth.Username != tc.user) {
				t.Errorf("the backend got the credentials %+v, want those of %q", b.auth, tc.user)
			}
		})
	}
}

func TestAuthEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"accepted", `{"username":"ci","password":"right","serveraddress":"127.0.0.1:5000"}`, 200, `{"Status":"Login Succeeded"}`},
		{"refused", `{"username":"ci","password":"wrong","serveraddress":"127.0.0.1:5000"}`, 401, `"message":"logging in to 127.0.0.1:5000: the registry refused the credentials"`},
		{"no username", `{"password":"right"}`, 400, "give docker login -u USER"},
		{"not JSON", `ci:right`, 400, "not a JSON object of credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(&registryStub{})
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest("POST", "/v1.41/auth", strings.NewReader(tc.body)))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
				t.Fatalf("got %d %s, want %d with %s", w.Code, w.Body, tc.code, tc.want)
			}
		})
	}
}
