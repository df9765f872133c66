package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// AuthError is a registry refusing kiln's credentials (or their absence).
type AuthError struct {
	// Registry is the host that refused, as written in references.
	Registry string
	// Anonymous is true when kiln had no credentials for Registry.
	Anonymous bool
	// Denied is true when the credentials were accepted but lack the
	// permission (403), rather than rejected (401).
	Denied bool
	// Login is true when the credentials were given to kiln login, not
	// read from the Docker config.
	Login bool
	// LoginCommand is what gives credentials to whoever made the
	// request: "kiln login" unless the resolver says otherwise (kiln
	// serve's clients log in with docker login).
	LoginCommand string
	Err          error
}

func (e *AuthError) Error() string {
	host := e.Registry
	login := e.LoginCommand
	if login == "" {
		login = "kiln login"
	}
	switch {
	case e.Denied:
		return fmt.Sprintf("registry %s denied access: the credentials kiln used do not allow this (check the repository name and your permissions): %v", host, e.Err)
	case e.Login:
		return fmt.Sprintf("authentication to registry %s failed: the registry rejected the username or password: %v", host, e.Err)
	case e.Anonymous:
		return fmt.Sprintf("authentication to registry %s failed: it requires credentials and none are configured for it (run `%s %s`): %v", host, login, host, e.Err)
	default:
		return fmt.Sprintf("authentication to registry %s failed: the registry rejected the username or password (run `%s %s` again): %v", host, login, host, e.Err)
	}
}

func (e *AuthError) Unwrap() error { return e.Err }

// explain turns the failures users most often hit into errors that say what
// to do; others are returned as they are. The raw error stays wrapped, and
// never holds credentials: go-containerregistry redacts them from URLs and
// headers are not part of its messages.
func (r *Resolver) explain(ctx context.Context, reg name.Registry, err error) error {
	host := reg.String()
	if hostKey(host) == "docker.io" {
		host = "docker.io" // as users write it, and as kiln login takes it
	}
	var te *transport.Error
	if errors.As(err, &te) {
		unauthorized := te.StatusCode == http.StatusUnauthorized
		denied := te.StatusCode == http.StatusForbidden
		unknown := false
		for _, d := range te.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode:
				unauthorized = true
			case transport.DeniedErrorCode:
				denied = true
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
				unknown = true
			}
		}
		if unauthorized || denied {
			return &AuthError{Registry: host, Anonymous: r.anonymous(ctx, reg), Denied: denied && !unauthorized, LoginCommand: r.LoginCommand, Err: err}
		}
		if unknown {
			return fmt.Errorf("registry %s has no such image (check the name and the tag): %w", host, err)
		}
	}
	if errors.Is(err, remote.ErrSchema1) {
		return fmt.Errorf("the image is in Docker's schema 1 format, which kiln does not read (it was removed from Docker in 2019; push the image again with a current client to convert it): %w", err)
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return fmt.Errorf("registry %s presents a certificate from an unknown authority (put its CA in %s/%s/ca.crt or under ca = [...] in kiln.toml, or use --insecure-registry %s): %w", host, certsDirOf(r), host, host, err)
	}
	var hn x509.HostnameError
	if errors.As(err, &hn) {
		return fmt.Errorf("registry %s presents a certificate for another name (use --insecure-registry %s to skip verification): %w", host, host, err)
	}
	return err
}

func certsDirOf(r *Resolver) string {
	if r.CertsDir != "" {
		return r.CertsDir
	}
	return certsDir()
}

// anonymous reports whether kiln has no credentials for reg.
func (r *Resolver) anonymous(ctx context.Context, reg name.Registry) bool {
	a, err := authn.Resolve(ctx, r.keychain(), reg)
	if err != nil {
		return false
	}
	return a == authn.Anonymous
}
