package main

import (
	"context"
	"fmt"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/platform"
)

// imageResolver is how a build finds the images its FROM, COPY --from and
// RUN --mount from= name: kiln's store first, then the registry; with
// --pull (pull true) the registry alone.
func imageResolver(store *cache.Store, remote planner.ImageResolver, pull bool) planner.ImageResolver {
	if pull {
		return &registryOnly{store: store, next: remote, seen: map[string]*resolved{}}
	}
	return storeFirst{store: store, next: remote}
}

// storeFirst resolves FROM and COPY --from names in kiln's own store before
// any registry, as podman and buildah do: an image built with -t NAME (or
// loaded with kiln load) is usable as a base with no registry at all.
type storeFirst struct {
	store *cache.Store
	next  planner.ImageResolver
}

func (r storeFirst) ResolvePlatform(ctx context.Context, ref string, p ocispec.Platform) (v1.Image, string, error) {
	img, ok, err := r.store.Image(ref)
	if err != nil {
		return nil, "", fmt.Errorf("looking up %s in the local store: %w", ref, err)
	}
	if ok && !storedFor(img, p) {
		// The store holds one platform of a name; another platform's
		// build of it comes from the registry.
		ok = false
	}
	if ok {
		d, err := img.Digest()
		if err != nil {
			return nil, "", err
		}
		name, err := cache.NormalizeImageName(ref)
		if err != nil {
			name = ref
		}
		return img, name + "@" + d.String(), nil
	}
	return r.next.ResolvePlatform(ctx, ref, p)
}

// storedFor reports whether a stored image is for platform p.
func storedFor(img v1.Image, p ocispec.Platform) bool {
	cf, err := img.ConfigFile()
	if err != nil {
		return true // reading it again later says what is wrong
	}
	return platform.Matches(cf.OS, cf.Architecture, cf.Variant, p)
}

// registryOnly is --pull: every name is resolved against its registry,
// whatever kiln's store holds under it, so a tag moved in the registry is
// seen by a runner whose store still has the old image; a name the
// registry lacks is an error even when the store has it, as BuildKit's
// pull mode does. Each name is resolved once per build, so two stages
// FROM the same tag cannot see two images if the tag moves mid-build.
type registryOnly struct {
	store *cache.Store
	next  planner.ImageResolver

	mu   sync.Mutex
	seen map[string]*resolved
}

type resolved struct {
	once      sync.Once
	img       v1.Image
	canonical string
	err       error
}

func (r *registryOnly) ResolvePlatform(ctx context.Context, ref string, p ocispec.Platform) (v1.Image, string, error) {
	id := ref + "\x00" + platform.Format(p)
	r.mu.Lock()
	res, ok := r.seen[id]
	if !ok {
		res = &resolved{}
		r.seen[id] = res
	}
	r.mu.Unlock()
	res.once.Do(func() {
		res.img, res.canonical, res.err = r.next.ResolvePlatform(ctx, ref, p)
		if res.err == nil {
			return
		}
		// The store's copy is not a fallback (that would hide a base that
		// vanished from the registry), but saying it exists tells the user
		// why a build that worked without --pull fails with it.
		if _, local, err := r.store.Image(ref); err == nil && local {
			res.err = fmt.Errorf("%w (--pull asks the registry only; kiln's store has an image named %s: build without --pull to use it)", res.err, ref)
		}
	})
	return res.img, res.canonical, res.err
}
