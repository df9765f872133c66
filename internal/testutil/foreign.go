package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/emulate"
)

// DebianArch returns Debian's name for an OCI platform's architecture
// (linux/arm64 → arm64, linux/arm/v7 → armhf, linux/386 → i386).
func DebianArch(platform string) (string, error) {
	p, err := platforms.Parse(platform)
	if err != nil {
		return "", fmt.Errorf("platform %q: %w", platform, err)
	}
	p = platforms.Normalize(p)
	switch p.Architecture {
	case "arm":
		if p.Variant == "v5" {
			return "armel", nil
		}
		return "armhf", nil
	case "386":
		return "i386", nil
	case "ppc64le":
		return "ppc64el", nil
	case "mips64le":
		return "mips64el", nil
	case "amd64", "arm64", "s390x", "riscv64":
		return p.Architecture, nil
	}
	return "", fmt.Errorf("platform %s has no Debian architecture", platform)
}

// foreignBusyboxMu keeps this process to one download at a time.
var foreignBusyboxMu sync.Mutex

// ForeignBusyboxBinary returns the path of Debian's busybox-static for
// platform (linux/arm64, linux/arm/v7 …), downloaded with `apt-get download
// busybox-static:ARCH` and unpacked once into CacheDir(). It needs the
// architecture added to dpkg (dpkg --add-architecture ARCH && apt-get
// update), as .ci/run does; a *SkipError says what is missing.
func ForeignBusyboxBinary(ctx context.Context, platform string) (string, error) {
	arch, err := DebianArch(platform)
	if err != nil {
		return "", err
	}
	foreignBusyboxMu.Lock()
	defer foreignBusyboxMu.Unlock()
	cacheDir := CacheDir()
	dest := filepath.Join(cacheDir, "busybox-static-"+arch)
	bin := filepath.Join(dest, "bin", "busybox")
	if exists(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", &SkipError{fmt.Sprintf("creating fixture cache %s: %v (set KILN_TEST_CACHE)", cacheDir, err)}
	}
	unlock, err := lockPath(filepath.Join(cacheDir, "busybox-static-"+arch+".lock"))
	if err != nil {
		return "", &SkipError{fmt.Sprintf("locking fixture cache %s: %v (set KILN_TEST_CACHE)", cacheDir, err)}
	}
	defer unlock()
	if exists(bin) { // another process made it while we waited
		return bin, nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", &SkipError{"apt-get is missing: the " + arch + " busybox comes from Debian's archive"}
	}
	out, err := exec.CommandContext(ctx, "dpkg", "--print-foreign-architectures").Output()
	if err != nil || !strings.Contains(" "+strings.Join(strings.Fields(string(out)), " ")+" ", " "+arch+" ") {
		return "", &SkipError{fmt.Sprintf("dpkg does not know architecture %s: run `dpkg --add-architecture %[1]s && apt-get update` as root", arch)}
	}
	work, err := os.MkdirTemp(cacheDir, "busybox-"+arch+"-")
	if err != nil {
		return "", fmt.Errorf("creating download directory: %w", err)
	}
	defer os.RemoveAll(work)
	// apt drops to _apt for downloads when it can; a world-writable
	// directory spares the "unsandboxed" warning and works as any user.
	os.Chmod(work, 0o777)
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", "busybox-static:"+arch)
	dl.Dir = work
	if out, err := dl.CombinedOutput(); err != nil {
		return "", &SkipError{fmt.Sprintf("apt-get download busybox-static:%s (run apt-get update after dpkg --add-architecture %[1]s): %v\n%s", arch, err, tail(out, 10))}
	}
	debs, _ := filepath.Glob(filepath.Join(work, "busybox-static_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download busybox-static:%s left %d packages", arch, len(debs))
	}
	x := filepath.Join(work, "x")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpacking %s: %v\n%s", debs[0], err, tail(out, 10))
	}
	if !exists(filepath.Join(x, "bin", "busybox")) {
		return "", fmt.Errorf("%s holds no bin/busybox", debs[0])
	}
	if err := os.Rename(x, dest); err != nil {
		return "", fmt.Errorf("caching busybox for %s: %w", arch, err)
	}
	return bin, nil
}

var foreignDebian struct {
	mu   sync.Mutex
	imgs map[string]v1.Image
}

// DebianFor returns a debian:bookworm minbase image for platform (e.g.
// linux/arm64), made by `debootstrap --foreign` and finished under QEMU,
// cached under CacheDir() like DebianImage. The test is skipped (SkipHost)
// when that cannot be done here: no QEMU handler with the F flag (`kiln
// binfmt --install`), debootstrap missing, not root, archive unreachable.
func DebianFor(t testing.TB, platform string) v1.Image {
	t.Helper()
	img, err := NewDebianImageFor(context.Background(), CacheDir(), platform)
	var skip *SkipError
	if errors.As(err, &skip) {
		SkipHost(t, skip.Reason)
	}
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// PushDebianFor pushes DebianFor(platform) to
// REGISTRY/library/debian:bookworm-ARCH (bookworm-arm64, bookworm-armhf) and
// returns that reference: the name foreign conformance cases use.
func PushDebianFor(t testing.TB, registry, platform string) string {
	t.Helper()
	arch, err := DebianArch(platform)
	if err != nil {
		t.Fatal(err)
	}
	return Push(t, DebianFor(t, platform), registry+"/library/debian:bookworm-"+arch)
}

// NewDebianImageFor is DebianImage for another platform: the rootfs of
// `debootstrap --variant=minbase --foreign --arch=ARCH bookworm`, its second
// stage run under chroot with the QEMU handler, without apt's downloaded
// packages and lists, as one layer; Cmd ["bash"], the default PATH.
//
// cacheDir keeps debian-bookworm-ARCH.tar and .tar.gz: the emulated second
// stage takes minutes, so a machine builds it once.
func NewDebianImageFor(ctx context.Context, cacheDir, platform string) (v1.Image, error) {
	arch, err := DebianArch(platform)
	if err != nil {
		return nil, err
	}
	p := platforms.Normalize(platforms.MustParse(platform))
	key := platforms.Format(p)
	foreignDebian.mu.Lock()
	defer foreignDebian.mu.Unlock()
	if img := foreignDebian.imgs[key]; img != nil {
		return img, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, &SkipError{fmt.Sprintf("creating fixture cache %s: %v (set KILN_TEST_CACHE)", cacheDir, err)}
	}
	unlock, err := lockPath(filepath.Join(cacheDir, "debian-bookworm-"+arch+".lock"))
	if errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist) {
		return nil, &SkipError{fmt.Sprintf("locking fixture cache %s: %v (set KILN_TEST_CACHE)", cacheDir, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("locking fixture cache %s: %w", cacheDir, err)
	}
	defer unlock()

	l, err := cachedDebianLayer(filepath.Join(cacheDir, "debian-bookworm-"+arch+".tar"), func(rootfs string) error {
		return makeForeignDebianRootfs(ctx, cacheDir, key, arch, rootfs)
	})
	if err != nil {
		return nil, err
	}
	img, err := baseImageFor(plainLayer{l}, "bash", v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
	if err != nil {
		return nil, err
	}
	if foreignDebian.imgs == nil {
		foreignDebian.imgs = map[string]v1.Image{}
	}
	foreignDebian.imgs[key] = img
	return img, nil
}

func makeForeignDebianRootfs(ctx context.Context, cacheDir, platform, arch, dest string) error {
	debootstrap, err := exec.LookPath("debootstrap")
	if err != nil {
		if debootstrap, err = exec.LookPath("/usr/sbin/debootstrap"); err != nil {
			return &SkipError{"debootstrap is missing: apt-get install -y debootstrap"}
		}
	}
	if os.Geteuid() != 0 {
		return &SkipError{"debootstrap needs root to build the " + arch + " debian base"}
	}
	// The second stage runs the foreign shell in a chroot: only a handler
	// with the F flag has its interpreter open there.
	if err := emulate.Check(platform); err != nil {
		return &SkipError{fmt.Sprintf("making the %s debian base: %v", arch, err)}
	}
	dir, err := os.MkdirTemp(cacheDir, "debootstrap-"+arch+"-")
	if err != nil {
		return fmt.Errorf("creating debootstrap directory: %w", err)
	}
	defer removeChroot(dir)

	ctx, cancel := context.WithTimeout(ctx, 45*time.Minute)
	defer cancel()
	first := exec.CommandContext(ctx, debootstrap, "--foreign", "--arch="+arch, "--variant=minbase", "bookworm", dir)
	if out, err := first.CombinedOutput(); err != nil {
		return &SkipError{fmt.Sprintf("debootstrap --foreign --arch=%s --variant=minbase bookworm: %v\n%s", arch, err, tail(out, 20))}
	}
	second := exec.CommandContext(ctx, "/debootstrap/debootstrap", "--second-stage")
	second.Env = []string{DefaultPath, "LANG=C", "HOME=/root"}
	// A private mount namespace: the /proc and /sys the second stage
	// mounts inside the chroot go away with it, whatever happens.
	second.SysProcAttr = &syscall.SysProcAttr{Chroot: dir, Unshareflags: syscall.CLONE_NEWNS}
	if out, err := second.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "debootstrap", "debootstrap.log"))
		return fmt.Errorf("debootstrap --second-stage for %s under QEMU: %v\n%s\n%s", arch, err, tail(out, 20), tail(log, 20))
	}
	// What peers.sh drops: downloaded packages and apt lists.
	for _, pattern := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return fmt.Errorf("cleaning debootstrap output: %w", err)
			}
		}
	}
	tmp := dest + ".tmp"
	if out, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "-C", dir, "-cf", tmp, ".").CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tarring %s debian rootfs: %v\n%s", arch, err, tail(out, 20))
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("caching %s debian rootfs: %w", arch, err)
	}
	return nil
}

// NewForeignBusyboxImage returns the busybox base for platform (e.g.
// linux/arm64): NewBusyboxImage's layout around Debian's busybox-static for
// that architecture (ForeignBusyboxBinary), with the platform in its
// config. It is the image peers.sh pushes as library/busybox:arm64, byte
// for byte, and the same as NewBusyboxFor's (which takes Debian's
// architecture names and caches the binary elsewhere).
func NewForeignBusyboxImage(ctx context.Context, platform string) (v1.Image, error) {
	bin, err := ForeignBusyboxBinary(ctx, platform)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", bin, err)
	}
	b, err := busyboxTarOf(data)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, fmt.Errorf("making the %s busybox layer: %w", platform, err)
	}
	p := platforms.Normalize(platforms.MustParse(platform))
	return baseImageFor(plainLayer{l}, "sh", v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
}
