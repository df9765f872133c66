// Package registry talks to image registries: it resolves references as
// Docker does (short names, manifest lists to linux/amd64), pulls through
// configured mirrors before the origin, pushes with retries, and applies
// per-registry TLS settings (Docker's certs.d, kiln.toml in buildkitd.toml's
// shape, --insecure-registry) and the credentials of the Docker config.
//
// Registry answers are untrusted. Every request passes one guard (guard.go)
// that refuses plain HTTP except to loopback and to hosts the user allowed,
// and bounds manifest sizes; Resolve bounds index nesting and checks the
// config's declared size before fetching it (limits.go).
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/trace"
)

// Resolver fetches and pushes images. Its zero value is usable: no mirrors,
// system TLS roots plus Docker's certs.d, credentials from the Docker
// config. Use it through a pointer; it builds its transport once.
type Resolver struct {
	// Insecure lists registries (HOST or HOST:PORT) reached over plain HTTP
	// or unverified TLS.
	Insecure []string
	// Config holds per-registry settings (kiln.toml, --registry-mirror).
	Config Config
	// CertsDir replaces Docker's /etc/docker/certs.d ($KILN_CERTS_DIR when
	// empty and set).
	CertsDir string
	// Keychain finds credentials; nil means the Docker config
	// (authn.DefaultKeychain).
	Keychain authn.Keychain
	// LoginCommand is the command an authentication error tells the user
	// to run; empty means "kiln login".
	LoginCommand string
	// Transport, when set, replaces the per-host TLS transport (tests).
	Transport http.RoundTripper
	// Backoff paces retries of failed requests and uploads; the zero value
	// means DefaultBackoff.
	Backoff remote.Backoff
	// Log, when set, is told about mirrors that could not serve an image.
	Log io.Writer

	once sync.Once
	rt   http.RoundTripper

	mu sync.Mutex
	// sources maps the layers of images resolved so far to where they
	// came from, so that a push to the same registry mounts them rather
	// than uploading them again.
	sources map[v1.Hash]name.Digest
}

// DefaultBackoff retries a failed request or upload five times over about
// fifteen seconds: enough to ride out a registry restart or a burst of
// 503s from a load balancer, short enough that a CI job fails while its
// log is still being watched.
var DefaultBackoff = remote.Backoff{
	Duration: 500 * time.Millisecond,
	Factor:   2,
	Jitter:   0.2,
	Steps:    6,
}

// settings returns the configuration of a registry or mirror host.
func (r *Resolver) settings(host string) HostConfig {
	return r.Config.Registry[hostKey(host)]
}

// insecure reports whether TLS verification is off for host.
func (r *Resolver) insecure(host string) bool {
	k := hostKey(host)
	for _, h := range r.Insecure {
		if hostKey(h) == k {
			return true
		}
	}
	return r.settings(host).Insecure
}

// allowHTTP reports whether plain HTTP may be used to reach host: a
// loopback registry, or one the user marked http or insecure.
func (r *Resolver) allowHTTP(host string) bool {
	return isLoopback(host) || r.insecure(host) || r.settings(host).HTTP
}

// limits are r's limits with defaults for what is unset.
func (r *Resolver) limits() Limits {
	return r.Config.Limits.WithDefaults()
}

// nameOptions are the options for parsing a reference to host: plain HTTP
// is allowed for insecure and http = true hosts (go-containerregistry then
// tries HTTPS first and falls back).
func (r *Resolver) nameOptions(host string) []name.Option {
	if r.insecure(host) || r.settings(host).HTTP {
		return []name.Option{name.Insecure}
	}
	return nil
}

// Parse normalises ref like Docker ("busybox" is
// docker.io/library/busybox:latest).
func (r *Resolver) Parse(ref string) (name.Reference, error) {
	var opts []name.Option
	if p, err := name.ParseReference(ref); err == nil {
		opts = r.nameOptions(p.Context().RegistryStr())
	}
	n, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %q: %w", ref, err)
	}
	return n, nil
}

func (r *Resolver) transport() http.RoundTripper {
	r.once.Do(func() {
		base := r.Transport
		if base == nil {
			dir := r.CertsDir
			if dir == "" {
				dir = certsDir()
			}
			base = newHostTransport(dir, r.settings, r.insecure)
		}
		g := &guard{inner: base, allowHTTP: r.allowHTTP, limits: r.limits()}
		r.rt = trace.Transport(&retrying{inner: g, tries: 3, base: r.backoff().Duration / 5, max: time.Minute, now: time.Now})
	})
	return r.rt
}

func (r *Resolver) backoff() remote.Backoff {
	if r.Backoff.Steps == 0 {
		return DefaultBackoff
	}
	return r.Backoff
}

func (r *Resolver) keychain() authn.Keychain {
	if r.Keychain != nil {
		return r.Keychain
	}
	return authn.DefaultKeychain
}

// Options are the remote options for talking to registries: they apply to
// any reference, since TLS settings are chosen per host by the transport.
func (r *Resolver) Options(ctx context.Context) []remote.Option {
	b := r.backoff()
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(r.keychain()),
		remote.WithPlatform(platform.V1(platform.Legacy)),
		remote.WithTransport(r.transport()),
		remote.WithRetryBackoff(b),
		// Registry operators see who is pulling; go-containerregistry adds
		// its own name after.
		remote.WithUserAgent("kiln"),
	}
}

// Resolve returns the linux/amd64 image ref names and its canonical
// name@digest: ResolvePlatform for platform.Legacy.
func (r *Resolver) Resolve(ctx context.Context, ref string) (v1.Image, string, error) {
	return r.ResolvePlatform(ctx, ref, platform.Legacy)
}

// ResolvePlatform returns the image ref names for platform want (from an
// index, the entry containerd's matching prefers; a single image whatever
// its config says, which the caller checks) and its canonical
// name@digest. Mirrors of ref's registry are tried first, in order, then
// the registry itself; the canonical name is always the origin's, so a
// mirror changes where bytes come from, never what the build records.
// Layers are fetched lazily by the caller, from wherever the manifest came.
func (r *Resolver) ResolvePlatform(ctx context.Context, ref string, want ocispec.Platform) (v1.Image, string, error) {
	n, err := r.Parse(ref)
	if err != nil {
		return nil, "", err
	}
	var mirrorErrs []error
	for _, m := range r.settings(n.Context().RegistryStr()).Mirrors {
		mref, err := r.mirrorRef(n, m)
		if err == nil {
			var img v1.Image
			if img, err = r.image(ctx, mref, want); err == nil {
				return r.resolved(n, mref, img)
			}
		}
		if r.Log != nil {
			fmt.Fprintf(r.Log, "mirror %s could not serve %s, trying the next source: %v\n", m, n, err)
		}
		mirrorErrs = append(mirrorErrs, fmt.Errorf("mirror %s: %w", m, err))
	}
	img, err := r.image(ctx, n, want)
	if err != nil {
		if len(mirrorErrs) > 0 {
			err = fmt.Errorf("%w (and through its mirrors: %w)", err, errors.Join(mirrorErrs...))
		}
		return nil, "", fmt.Errorf("resolving %s: %w", n.Name(), err)
	}
	return r.resolved(n, n, img)
}

// resolved names img, resolved for n and fetched from src, and remembers
// where its layers live.
func (r *Resolver) resolved(n, src name.Reference, img v1.Image) (v1.Image, string, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, "", fmt.Errorf("resolving %s: %w", n.Name(), err)
	}
	// The manifest is already here: remote.Image fetched it.
	if m, err := img.Manifest(); err == nil {
		at := src.Context().Digest(d.String())
		r.mu.Lock()
		if r.sources == nil {
			r.sources = map[v1.Hash]name.Digest{}
		}
		for _, l := range m.Layers {
			r.sources[l.Digest] = at
		}
		r.mu.Unlock()
	}
	return img, n.Context().Name() + "@" + d.String(), nil
}

// image fetches the manifest of ref, explaining authentication, TLS and
// schema 1 failures.
func (r *Resolver) image(ctx context.Context, ref name.Reference, want ocispec.Platform) (v1.Image, error) {
	img, err := r.boundedImage(ctx, ref, want)
	if err != nil {
		return nil, r.explain(ctx, ref.Context().Registry, err)
	}
	return img, nil
}

// boundedImage is remote.Image within r's limits. go-containerregistry
// follows nested indexes to any depth and reads a config of whatever size
// the manifest declares, so the walk from index to image is done here, a
// level at a time, and the image's declared sizes are checked before any
// of its blobs is fetched.
func (r *Resolver) boundedImage(ctx context.Context, ref name.Reference, want ocispec.Platform) (v1.Image, error) {
	lim := r.limits()
	opts := r.Options(ctx)
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, err
	}
	for depth := 1; desc.MediaType.IsIndex(); depth++ {
		if depth > lim.IndexDepth {
			return nil, fmt.Errorf("image %s: its image indexes are nested more than %d deep, over kiln's limit (published images use one level; if this image is genuine, raise index-depth under [limits] in %s)", ref, lim.IndexDepth, ConfigPath())
		}
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("reading image index %s: %w", desc.Digest, err)
		}
		child, ok := platform.Pick(im.Manifests, want)
		if !ok {
			return nil, fmt.Errorf("image index %s has no %s image (it has %s); build for one of those with --platform, or use a base image published for %s", ref, platform.Format(want), indexPlatforms(im.Manifests), platform.Format(want))
		}
		if desc, err = remote.Get(ref.Context().Digest(child.Digest.String()), opts...); err != nil {
			return nil, err
		}
	}
	img, err := desc.Image()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading manifest of %s: %w", ref, err)
	}
	// A negative size means "unknown" to go-containerregistry, which then
	// reads a blob to its end, however far that is.
	if m.Config.Size < 0 {
		return nil, fmt.Errorf("image %s: its manifest declares a negative config size (%d): the manifest is invalid", ref, m.Config.Size)
	}
	if m.Config.Size > int64(lim.ConfigSize) {
		return nil, &TooLargeError{What: "config", Where: ref.String(), Size: m.Config.Size, Limit: int64(lim.ConfigSize),
			Setting: "config-size under [limits] in " + ConfigPath()}
	}
	for i, l := range m.Layers {
		if l.Size < 0 {
			return nil, fmt.Errorf("image %s: layer %d declares a negative size (%d): the manifest is invalid", ref, i+1, l.Size)
		}
	}
	return img, nil
}

// indexPlatforms lists the platforms of an index's images, for messages.
func indexPlatforms(ds []v1.Descriptor) string {
	var out []string
	for _, d := range ds {
		p := platform.Legacy
		if d.Platform != nil {
			p = platform.FromV1(*d.Platform)
		}
		if p.OS == "unknown" { // attestation manifests
			continue
		}
		out = append(out, platform.Format(p))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// mirrorRef is ref as served by mirror (HOST[:PORT][/PATH]): the same
// repository path and tag or digest, under the mirror's host and path.
// Pulling by digest through a mirror stays safe: go-containerregistry
// checks that the manifest it gets has that digest.
func (r *Resolver) mirrorRef(ref name.Reference, mirror string) (name.Reference, error) {
	host, _, _ := strings.Cut(mirror, "/")
	repo := strings.TrimSuffix(mirror, "/") + "/" + ref.Context().RepositoryStr()
	opts := r.nameOptions(host)
	var (
		m   name.Reference
		err error
	)
	if d, ok := ref.(name.Digest); ok {
		m, err = name.NewDigest(repo+"@"+d.DigestStr(), opts...)
	} else {
		m, err = name.NewTag(repo+":"+ref.Identifier(), opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("naming %s on mirror %s: %w", ref, mirror, err)
	}
	return m, nil
}
