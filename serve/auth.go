package serve

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Registry credentials come with requests, as dockerd takes them: push
// and pull carry one AuthConfig in X-Registry-Auth, a build carries a map
// of them, one per registry, in X-Registry-Config. They live in the
// request's keychain only: kiln serve never logs them, never stores them,
// and never puts them where a build step or a cache key could see them.

// AuthConfig is the Engine API's credentials for one registry.
type AuthConfig struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"` // base64 of user:password
	Email         string `json:"email,omitempty"`
	ServerAddress string `json:"serveraddress,omitempty"`
	// IdentityToken is a refresh token for the registry's token service.
	IdentityToken string `json:"identitytoken,omitempty"`
	// RegistryToken is a bearer token sent to the registry as it is.
	RegistryToken string `json:"registrytoken,omitempty"`
}

// String names the account only: a credential printed by mistake (%v in
// an error or a log) shows no secret.
func (a AuthConfig) String() string {
	if a.Username == "" {
		return fmt.Sprintf("credentials for %q", a.ServerAddress)
	}
	return fmt.Sprintf("credentials of %q for %q", a.Username, a.ServerAddress)
}

// GoString is String, for %#v.
func (a AuthConfig) GoString() string { return a.String() }

// empty reports whether a carries no credential: anonymous access.
func (a AuthConfig) empty() bool {
	return a.Username == "" && a.Password == "" && a.Auth == "" && a.IdentityToken == "" && a.RegistryToken == ""
}

// Authn is a as go-containerregistry takes it, with "auth" split into
// username and password (go-containerregistry's bearer token exchange
// reads those, not auth).
func (a AuthConfig) Authn() (authn.AuthConfig, error) {
	c := authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
	if a.Auth != "" && a.Username == "" {
		raw, err := decodeBase64(a.Auth)
		if err != nil {
			return c, fmt.Errorf("its auth field is not base64: %w", err)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return c, fmt.Errorf("its auth field is not base64 of USER:PASSWORD")
		}
		c.Username, c.Password = user, pass
	}
	return c, nil
}

// decodeBase64 reads base64 as dockerd does, and a little more: URL or
// standard alphabet (the docker CLI and docker-py send URL-safe, curl
// users write standard), padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	var firstErr error
	for _, enc := range []*base64.Encoding{base64.URLEncoding, base64.StdEncoding, base64.RawURLEncoding, base64.RawStdEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// DecodeRegistryAuth decodes X-Registry-Auth: base64 of a JSON AuthConfig. A
// missing or empty header, or "{}", is anonymous access (the zero
// AuthConfig). A malformed one is a 400.
func DecodeRegistryAuth(h http.Header) (AuthConfig, error) {
	var a AuthConfig
	v := strings.TrimSpace(h.Get("X-Registry-Auth"))
	if v == "" {
		return a, nil
	}
	raw, err := decodeBase64(v)
	if err != nil {
		return a, badRequest(fmt.Errorf("invalid X-Registry-Auth header: not base64 (send base64url of the JSON credentials, as the docker CLI does): %w", err))
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		// The JSON error may quote the header's bytes: a secret.
		return AuthConfig{}, badRequest(fmt.Errorf("invalid X-Registry-Auth header: not a JSON object of credentials (username, password, serveraddress, identitytoken, registrytoken)"))
	}
	if _, err := a.Authn(); err != nil {
		return AuthConfig{}, badRequest(fmt.Errorf("invalid X-Registry-Auth header: %w", err))
	}
	return a, nil
}

// DecodeRegistryConfig decodes X-Registry-Config: base64 of a JSON object from
// registry address to AuthConfig, the credentials the docker CLI has, for
// every registry a build may pull from. Missing or empty means none.
func DecodeRegistryConfig(h http.Header) (map[string]AuthConfig, error) {
	v := strings.TrimSpace(h.Get("X-Registry-Config"))
	if v == "" {
		return nil, nil
	}
	raw, err := decodeBase64(v)
	if err != nil {
		return nil, badRequest(fmt.Errorf("invalid X-Registry-Config header: not base64 (send base64url of a JSON object of registry → credentials, as the docker CLI does): %w", err))
	}
	var m map[string]AuthConfig
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, badRequest(fmt.Errorf("invalid X-Registry-Config header: not a JSON object of registry → credentials ({\"registry.example.com\": {\"username\": …, \"password\": …}})"))
	}
	for k, a := range m {
		if _, err := a.Authn(); err != nil {
			return nil, badRequest(fmt.Errorf("invalid X-Registry-Config header: the credentials for %q: %w", k, err))
		}
	}
	return m, nil
}

// registryKey is the registry a credential is for, spelled one way:
// host[:port], without the scheme and path the docker CLI's config keys
// may have, and docker.io for every spelling of Docker Hub.
func registryKey(addr string) string {
	a := strings.TrimSpace(strings.ToLower(addr))
	if i := strings.Index(a, "://"); i >= 0 {
		a = a[i+3:]
	}
	a, _, _ = strings.Cut(a, "/")
	switch a {
	case "", "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return a
}

// Keychain is the credentials of one request, by registry: an
// authn.Keychain that knows nothing else (no Docker config of the
// server's, no credential helper), so a client gets into a registry only
// with credentials it sent.
type Keychain struct {
	byRegistry map[string]authn.AuthConfig
}

// NewKeychain makes the keychain of credentials keyed by registry
// address (any spelling the docker CLI uses). Empty credentials are
// skipped.
func NewKeychain(creds map[string]AuthConfig) (*Keychain, error) {
	k := &Keychain{byRegistry: map[string]authn.AuthConfig{}}
	for addr, a := range creds {
		if a.empty() {
			continue
		}
		c, err := a.Authn()
		if err != nil {
			return nil, fmt.Errorf("the credentials for %q: %w", addr, err)
		}
		k.byRegistry[registryKey(addr)] = c
	}
	return k, nil
}

// KeychainFor is the keychain holding a for registry only: the push or
// pull target, whatever a's serveraddress says (dockerd too uses
// X-Registry-Auth for the registry of the image named in the path).
func KeychainFor(registry string, a AuthConfig) (*Keychain, error) {
	return NewKeychain(map[string]AuthConfig{registry: a})
}

// Resolve implements authn.Keychain: the credentials sent for target's
// registry, else anonymous.
func (k *Keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	if k == nil {
		return authn.Anonymous, nil
	}
	if c, ok := k.byRegistry[registryKey(target.RegistryStr())]; ok {
		return authn.FromConfig(c), nil
	}
	return authn.Anonymous, nil
}

// Registries lists the registries k has credentials for (no secret).
func (k *Keychain) Registries() []string {
	if k == nil {
		return nil
	}
	out := make([]string, 0, len(k.byRegistry))
	for r := range k.byRegistry {
		out = append(out, r)
	}
	return out
}

// String names the registries only.
func (k *Keychain) String() string {
	return fmt.Sprintf("credentials for %v", k.Registries())
}

// GoString is String, for %#v.
func (k *Keychain) GoString() string { return k.String() }

// BuildKeychain is the keychain of a POST /build: the credentials of its
// X-Registry-Config, for the FROM images it pulls.
func BuildKeychain(h http.Header) (*Keychain, error) {
	m, err := DecodeRegistryConfig(h)
	if err != nil {
		return nil, err
	}
	k, err := NewKeychain(m)
	if err != nil {
		return nil, badRequest(fmt.Errorf("invalid X-Registry-Config header: %w", err))
	}
	return k, nil
}

var _ authn.Keychain = (*Keychain)(nil)
