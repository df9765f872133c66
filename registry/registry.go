// Package registry resolves image references against registries: short
// names as Docker does, manifest lists to linux/amd64, credentials from the
// Docker config, plain HTTP for loopback and --insecure-registry hosts.
package registry

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Resolver fetches images. Its zero value is usable.
type Resolver struct {
	// Insecure lists registries (HOST or HOST:PORT) reached over plain HTTP
	// or unverified TLS.
	Insecure []string
	// Transport, when set, replaces the default HTTP transport (tests).
	Transport http.RoundTripper
}

// Parse normalises ref like Docker ("busybox" is
// docker.io/library/busybox:latest).
func (r *Resolver) Parse(ref string) (name.Reference, error) {
	var opts []name.Option
	if p, err := name.ParseReference(ref); err == nil && slices.Contains(r.Insecure, p.Context().RegistryStr()) {
		opts = append(opts, name.Insecure)
	}
	n, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %q: %w", ref, err)
	}
	return n, nil
}

// Options are the remote options for talking to ref's registry.
func (r *Resolver) Options(ctx context.Context) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
	}
	if r.Transport != nil {
		opts = append(opts, remote.WithTransport(r.Transport))
	}
	return opts
}

// Resolve returns the linux/amd64 image ref names and its canonical
// name@digest. Layers are fetched lazily by the caller.
func (r *Resolver) Resolve(ctx context.Context, ref string) (v1.Image, string, error) {
	n, err := r.Parse(ref)
	if err != nil {
		return nil, "", err
	}
	img, err := remote.Image(n, r.Options(ctx)...)
	if err != nil {
		return nil, "", fmt.Errorf("resolving %s: %w", n.Name(), err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, "", fmt.Errorf("resolving %s: %w", n.Name(), err)
	}
	return img, n.Context().Name() + "@" + d.String(), nil
}
