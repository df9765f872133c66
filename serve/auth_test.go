package serve

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func header(k, v string) http.Header {
	h := http.Header{}
	if v != "" {
		h.Set(k, v)
	}
	return h
}

func TestDecodeRegistryAuth(t *testing.T) {
	creds := `{"username":"ci","password":"s3cret+/?","serveraddress":"127.0.0.1:5000"}`
	userPass := base64.StdEncoding.EncodeToString([]byte("ci:s3cret+/?"))
	for _, tc := range []struct {
		name, header string
		want         authn.AuthConfig // after Authn
		bad          string           // a substring of the 400's message
	}{
		{name: "none", header: ""},
		{name: "empty object", header: base64.URLEncoding.EncodeToString([]byte("{}"))},
		{name: "url base64", header: base64.URLEncoding.EncodeToString([]byte(creds)), want: authn.AuthConfig{Username: "ci", Password: "s3cret+/?"}},
		{name: "std base64", header: base64.StdEncoding.EncodeToString([]byte(creds)), want: authn.AuthConfig{Username: "ci", Password: "s3cret+/?"}},
		{name: "unpadded", header: base64.RawURLEncoding.EncodeToString([]byte(creds)), want: authn.AuthConfig{Username: "ci", Password: "s3cret+/?"}},
		{name: "auth field", header: base64.URLEncoding.EncodeToString([]byte(`{"auth":"` + userPass + `"}`)), want: authn.AuthConfig{Username: "ci", Password: "s3cret+/?"}},
		{name: "identity token", header: base64.URLEncoding.EncodeToString([]byte(`{"identitytoken":"tok"}`)), want: authn.AuthConfig{IdentityToken: "tok"}},
		{name: "registry token", header: base64.URLEncoding.EncodeToString([]byte(`{"registrytoken":"tok"}`)), want: authn.AuthConfig{RegistryToken: "tok"}},
		{name: "not base64", header: "%%%", bad: "invalid X-Registry-Auth header: not base64"},
		{name: "not JSON", header: base64.URLEncoding.EncodeToString([]byte("user:s3cret")), bad: "invalid X-Registry-Auth header: not a JSON object"},
		{name: "auth not base64", header: base64.URLEncoding.EncodeToString([]byte(`{"auth":"%%%"}`)), bad: "its auth field is not base64"},
		{name: "auth without colon", header: base64.URLEncoding.EncodeToString([]byte(`{"auth":"` + base64.StdEncoding.EncodeToString([]byte("s3cret")) + `"}`)), bad: "USER:PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := DecodeRegistryAuth(header("X-Registry-Auth", tc.header))
			if tc.bad != "" {
				var se *statusError
				if !errors.As(err, &se) || se.code != http.StatusBadRequest || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("got %v, want a 400 with %q", err, tc.bad)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("the error shows the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Authn()
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
			for _, s := range []string{a.String(), fmt.Sprintf("%v %+v %#v %s", a, a, a, a)} {
				if strings.Contains(s, "s3cret") || strings.Contains(s, userPass) {
					t.Errorf("printing the credentials shows the secret: %s", s)
				}
			}
		})
	}
}

func TestDecodeRegistryConfig(t *testing.T) {
	cfg := `{"https://index.docker.io/v1/":{"username":"hub","password":"h"},"127.0.0.1:5000":{"username":"ci","password":"s3cret"},"http://Other.example:8443/v2/":{"auth":"` +
		base64.StdEncoding.EncodeToString([]byte("o:p")) + `"},"empty.example":{}}`
	k, err := BuildKeychain(header("X-Registry-Config", base64.URLEncoding.EncodeToString([]byte(cfg))))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref  string
		want authn.AuthConfig
	}{
		{"busybox", authn.AuthConfig{Username: "hub", Password: "h"}},
		{"docker.io/library/busybox", authn.AuthConfig{Username: "hub", Password: "h"}},
		{"127.0.0.1:5000/x", authn.AuthConfig{Username: "ci", Password: "s3cret"}},
		{"other.example:8443/x", authn.AuthConfig{Username: "o", Password: "p"}},
		{"127.0.0.1:5001/x", authn.AuthConfig{}},
		{"empty.example/x", authn.AuthConfig{}},
		{"quay.io/x", authn.AuthConfig{}},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			r, err := name.ParseReference(tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			a, err := k.Resolve(r.Context().Registry)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Authorization()
			if err != nil || *got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if s := fmt.Sprintf("%v %#v %s", k, k, k); strings.Contains(s, "s3cret") {
		t.Errorf("printing the keychain shows a secret: %s", s)
	}

	for _, tc := range []struct{ name, header, bad string }{
		{"not base64", "!!", "invalid X-Registry-Config header: not base64"},
		{"not an object", base64.URLEncoding.EncodeToString([]byte(`["a"]`)), "invalid X-Registry-Config header: not a JSON object"},
		{"bad auth", base64.URLEncoding.EncodeToString([]byte(`{"r.example":{"auth":"@@"}}`)), `the credentials for "r.example"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildKeychain(header("X-Registry-Config", tc.header))
			var se *statusError
			if !errors.As(err, &se) || se.code != http.StatusBadRequest || !strings.Contains(err.Error(), tc.bad) {
				t.Fatalf("got %v, want a 400 with %q", err, tc.bad)
			}
		})
	}
	for _, h := range []string{"", base64.URLEncoding.EncodeToString([]byte("{}")), base64.URLEncoding.EncodeToString([]byte("null"))} {
		k, err := BuildKeychain(header("X-Registry-Config", h))
		if err != nil || len(k.Registries()) != 0 {
			t.Errorf("X-Registry-Config %q: %v, %v; want no credentials", h, k, err)
		}
	}
}

// TestRegistryRoutesWithoutBackend: a server whose backend cannot push
// answers the registry endpoints 501; requests are checked before that.
func TestRegistryRoutesWithoutBackend(t *testing.T) {
	s := New(staticBackend{})
	for _, tc := range []struct {
		method, path string
		auth         string
		code         int
		body         string
	}{
		{"POST", "/v1.41/images/127.0.0.1:5000/x/push?tag=1", "", 501, "does not push images"},
		{"POST", "/v1.41/images/create?fromImage=busybox&tag=1", "", 501, "does not pull images"},
		{"POST", "/v1.41/images/create?fromSrc=-&repo=x", "", 501, "does not import root filesystems"},
		{"POST", "/v1.41/images/create", "", 400, "invalid query parameter fromImage"},
		{"POST", "/v1.41/auth", "", 501, "does not log in"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}"))
			if tc.auth != "" {
				r.Header.Set("X-Registry-Auth", tc.auth)
			}
			s.ServeHTTP(w, r)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
				t.Fatalf("got %d %q, want %d with %q", w.Code, w.Body, tc.code, tc.body)
			}
		})
	}
}
