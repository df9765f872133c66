package testutil

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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

// NewBusyboxFor is BusyboxFor without a test.
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
	bin, err := foreignBusyboxBinary(arch)
	if err != nil {
		return nil, err
	}
	tb, err := busyboxTarOf(bin)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tb)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, err
	}
	img, err := baseImageFor(plainLayer{l}, "sh", p)
	if err != nil {
		return nil, err
	}
	if foreignBusybox.imgs == nil {
		foreignBusybox.imgs = map[string]v1.Image{}
	}
	foreignBusybox.imgs[arch] = img
	return img, nil
}

// foreignBusyboxBinary returns /bin/busybox of Debian's busybox-static for
// arch, downloading the package into the fixture cache once.
func foreignBusyboxBinary(arch string) ([]byte, error) {
	dir := filepath.Join(CacheDir(), "busybox-"+arch)
	bin := filepath.Join(dir, "busybox")
	if b, err := os.ReadFile(bin); err == nil {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &SkipError{fmt.Sprintf("creating fixture cache %s: %v (set KILN_TEST_CACHE)", dir, err)}
	}
	unlock, err := lockPath(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, &SkipError{fmt.Sprintf("locking fixture cache %s: %v (set KILN_TEST_CACHE)", dir, err)}
	}
	defer unlock()
	if b, err := os.ReadFile(bin); err == nil {
		return b, nil
	}
	tmp, err := os.MkdirTemp(dir, "deb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dl := exec.Command("apt-get", "download", "-qq", "busybox-static:"+arch)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return nil, &SkipError{fmt.Sprintf("apt-get download busybox-static:%s: %v: %s (run `dpkg --add-architecture %[1]s && apt-get update` as root once)", arch, err, bytes.TrimSpace(out))}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "busybox-static_*_"+arch+".deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download busybox-static:%s left %d packages", arch, len(debs))
	}
	x := filepath.Join(tmp, "x")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg-deb -x %s: %v: %s", debs[0], err, bytes.TrimSpace(out))
	}
	b, err := os.ReadFile(filepath.Join(x, "bin", "busybox"))
	if err != nil {
		return nil, fmt.Errorf("reading busybox of %s: %w", debs[0], err)
	}
	if err := os.WriteFile(bin+".tmp", b, 0o755); err != nil {
		return nil, err
	}
	return b, os.Rename(bin+".tmp", bin)
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
