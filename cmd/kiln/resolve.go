package main

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/planner"
)

// storeFirst resolves FROM and COPY --from names in kiln's own store before
// any registry, as podman and buildah do: an image built with -t NAME (or
// loaded with kiln load) is usable as a base with no registry at all.
type storeFirst struct {
	store *cache.Store
	next  planner.ImageResolver
}

func (r storeFirst) Resolve(ctx context.Context, ref string) (v1.Image, string, error) {
	img, ok, err := r.store.Image(ref)
	if err != nil {
		return nil, "", fmt.Errorf("looking up %s in the local store: %w", ref, err)
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
	return r.next.Resolve(ctx, ref)
}
