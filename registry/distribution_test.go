package registry

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/registry/registrytest"
)

// These tests run against Debian's docker-registry, the distribution
// registry most private registries are, in the three shapes users deploy
// it in. They skip when it is not installed (make deps installs it).

// validateRemote is `crane validate --remote`: fetch the image by its
// reference and check every blob against its digest and the config's
// diffIDs.
func validateRemote(t *testing.T, r *Resolver, ref string) v1.Hash {
	t.Helper()
	n, err := r.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(n, r.Options(context.Background())...)
	if err != nil {
		t.Fatalf("fetching %s: %v", ref, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("%s does not validate: %v", ref, err)
	}
	d, _ := img.Digest()
	return d
}

func TestDistributionShapes(t *testing.T) {
	tests := []struct {
		name string
		opts registrytest.DistributionOptions
	}{
		{name: "http", opts: registrytest.DistributionOptions{}},
		{name: "tls", opts: registrytest.DistributionOptions{TLS: true}},
		{name: "tls+htpasswd", opts: registrytest.DistributionOptions{TLS: true, User: "ci", Password: "s3cret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := registrytest.StartDistribution(t, tt.opts)
			r := &Resolver{CertsDir: t.TempDir(), Backoff: fastBackoff}
			if reg.CA != nil {
				// Without the CA the registry is refused, with a hint.
				_, err := r.Push(context.Background(), randomImage(t), []string{reg.Host + "/app:nope"})
				if err == nil || !strings.Contains(err.Error(), "unknown authority") {
					t.Fatalf("push without the CA: %v", err)
				}
				r = &Resolver{CertsDir: reg.CA.InstallCertsDir(t, t.TempDir(), reg.Host), Backoff: fastBackoff}
			}
			if reg.User != "" {
				var ae *AuthError
				if err := r.CheckLogin(context.Background(), reg.Host, reg.User, "wrong"); !errors.As(err, &ae) || !strings.Contains(err.Error(), reg.Host) {
					t.Fatalf("login with a wrong password: %v", err)
				}
				if err := r.CheckLogin(context.Background(), reg.Host, reg.User, reg.Password); err != nil {
					t.Fatal(err)
				}
				r.Keychain = staticKeychain{reg.Host, "ci", "wrong"}
				_, err := r.Push(context.Background(), randomImage(t), []string{reg.Host + "/app:1"})
				if !errors.As(err, &ae) || !strings.Contains(err.Error(), "authentication to registry "+reg.Host+" failed") {
					t.Fatalf("push with a wrong password: %v", err)
				}
				r.Keychain = staticKeychain{reg.Host, reg.User, reg.Password}
			}

			base, err := random.Image(32<<10, 3)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Push(context.Background(), base, []string{reg.Host + "/library/base:1"}); err != nil {
				t.Fatal(err)
			}
			validateRemote(t, r, reg.Host+"/library/base:1")

			// Build on the base as a build would: resolve it, add a layer,
			// push to another repository of the same registry.
			got, canonical, err := r.Resolve(context.Background(), reg.Host+"/library/base:1")
			if err != nil {
				t.Fatal(err)
			}
			top, err := random.Layer(1024, "application/vnd.oci.image.layer.v1.tar+gzip")
			if err != nil {
				t.Fatal(err)
			}
			app, err := mutate.AppendLayers(got, top)
			if err != nil {
				t.Fatal(err)
			}
			pushed, err := r.Push(context.Background(), app, []string{reg.Host + "/team/app:1"})
			if err != nil {
				t.Fatal(err)
			}
			d := validateRemote(t, r, reg.Host+"/team/app:1")
			if d != pushed[0].Digest {
				t.Errorf("pushed %s, registry has %s", pushed[0].Digest, d)
			}
			// Pull by digest, as a FROM pinned to the pushed image would.
			if _, _, err := r.Resolve(context.Background(), reg.Host+"/team/app@"+d.String()); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(canonical, reg.Host+"/library/base@sha256:") {
				t.Errorf("canonical name %q", canonical)
			}
		})
	}
}

// TestDistributionMounts checks that a push of an image built on a base
// from the same registry links the base layers into the new repository
// (cross-repository mount) rather than uploading them.
func TestDistributionMounts(t *testing.T) {
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{})
	proxy := registrytest.NewFaultProxy(t, "http://"+reg.Host, 0, 0, 1)
	r := &Resolver{Backoff: fastBackoff}
	base, err := random.Image(32<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Push(context.Background(), base, []string{proxy.Host + "/library/base:1"}); err != nil {
		t.Fatal(err)
	}
	got, _, err := r.Resolve(context.Background(), proxy.Host+"/library/base:1")
	if err != nil {
		t.Fatal(err)
	}
	top, _ := random.Layer(1024, "application/vnd.oci.image.layer.v1.tar+gzip")
	app, _ := mutate.AppendLayers(got, top)
	before := len(proxy.Requests())
	if _, err := r.Push(context.Background(), app, []string{proxy.Host + "/team/app:1"}); err != nil {
		t.Fatal(err)
	}
	mounts, patches := 0, 0
	for _, req := range proxy.Requests()[before:] {
		if req.Method == http.MethodPost && strings.Contains(req.Query, "mount=") && strings.Contains(req.Query, "from=library%2Fbase") {
			mounts++
		}
		if req.Method == http.MethodPatch || (req.Method == http.MethodPut && strings.Contains(req.Path, "/blobs/uploads/")) {
			patches++
		}
	}
	if mounts != 3 {
		t.Errorf("%d mounts, want one per base layer (3)", mounts)
	}
	// The new layer and the config are uploaded; nothing else.
	if patches > 4 {
		t.Errorf("%d upload requests for 2 new blobs", patches)
	}
	validateRemote(t, &Resolver{}, reg.Host+"/team/app:1")
}

// TestDistributionFaults pushes through a proxy failing 30% of the
// requests to the real registry; the pushed image must validate.
func TestDistributionFaults(t *testing.T) {
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{})
	proxy := registrytest.NewFaultProxy(t, "http://"+reg.Host, 0.3, 2, 7)
	img, err := random.Image(256<<10, 6)
	if err != nil {
		t.Fatal(err)
	}
	r := &Resolver{Backoff: fastBackoff}
	pushed, err := r.Push(context.Background(), img, []string{proxy.Host + "/flaky/app:1"})
	if err != nil {
		t.Fatal(err)
	}
	resets, unavailable, _ := proxy.Counts()
	if resets+unavailable == 0 {
		t.Fatal("no fault was injected")
	}
	t.Logf("%d resets, %d 503s", resets, unavailable)
	if d := validateRemote(t, r, reg.Host+"/flaky/app:1"); d != pushed[0].Digest {
		t.Errorf("registry has %s, pushed %s", d, pushed[0].Digest)
	}
	// And pulls through the same proxy get every byte.
	got, _, err := r.Resolve(context.Background(), proxy.Host+"/flaky/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("pulled through faults: %v", err)
	}
}
