package testutil

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// debianArches maps the Debian architectures BusyboxFor knows to the
// platform of their image.
var debianArches = map[string]v1.Platform{
	"arm64": {OS: "linux", Architecture: "arm64"},
	"armhf": {OS: "linux", Architecture: "arm", Variant: "v7"},
}

var foreignBusybox struct {
	mu   sync.Mutex
	imgs map[string]v1.Image
}

// BusyboxFor returns the busybox base image for a Debian architecture
// ("arm64", "armhf"): Debian's busybox-static of that architecture in the
// same root filesystem as BusyboxImage, with its platform in the config, as
// peers.sh makes 127.0.0.1:5000/library/busybox:arm64. The .deb is cached
// under CacheDir. The test is skipped (SkipHost) when apt cannot fetch it:
// the host needs `dpkg --add-architecture ARCH && apt-get update` once.
func BusyboxFor(t testing.TB, arch string) v1.Image {
	t.Helper()
	img, err := NewBusyboxFor(arch)
	if se, ok := err.(*SkipError); ok {
		SkipHost(t, se.Reason)
	}
	skipOrFail(t, err)
	return img
}

// NewBusyboxFor is BusyboxFor without a test: NewForeignBusyboxImage
// under Debian's architecture name, made once per process.
func NewBusyboxFor(arch string) (v1.Image, error) {
	p, ok := debianArches[arch]
	if !ok {
		return nil, fmt.Errorf("BusyboxFor: unknown architecture %q (want arm64 or armhf)", arch)
	}
	foreignBusybox.mu.Lock()
	defer foreignBusybox.mu.Unlock()
	if img := foreignBusybox.imgs[arch]; img != nil {
		return img, nil
	}
	platform := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		platform += "/" + p.Variant
	}
	img, err := NewForeignBusyboxImage(context.Background(), platform)
	if err != nil {
		return nil, err
	}
	if foreignBusybox.imgs == nil {
		foreignBusybox.imgs = map[string]v1.Image{}
	}
	foreignBusybox.imgs[arch] = img
	return img, nil
}

// PushBusyboxMulti pushes REGISTRY/library/busybox:multi, an index of the
// linux/amd64 busybox and the linux/arm64 one (as `peers.sh multiarch`
// makes it), and REGISTRY/library/busybox:arm64; it returns the index's
// reference.
func PushBusyboxMulti(t testing.TB, registry string) string {
	t.Helper()
	amd := BusyboxImage(t)
	arm := BusyboxFor(t, "arm64")
	Push(t, arm, registry+"/library/busybox:arm64")
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for _, img := range []v1.Image{amd, arm} {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	ref := registry + "/library/busybox:multi"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	return ref
}
