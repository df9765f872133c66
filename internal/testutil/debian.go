package testutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// DefaultCacheDir keeps the debian base between test runs; KILN_TEST_CACHE
// overrides it.
const DefaultCacheDir = "/var/cache/kiln-test"

// peersDebianTar is the rootfs tar peers.sh makes. Starting from it, when
// it is there, gives the very base conformance runs use (same bytes, same
// digest) and saves minutes of debootstrap. KILN_TEST_DEBIAN_SEED names
// another tar; set it empty to always debootstrap.
const peersDebianTar = "/tmp/peers/deb.tar"

// SkipError says a fixture cannot be made on this machine; tests skip with
// its reason (SkipHost: under KILN_TEST_STRICT=1 they fail).
type SkipError struct{ Reason string }

func (e *SkipError) Error() string { return e.Reason }

// CacheDir is where fixtures are cached between runs.
func CacheDir() string {
	if d := os.Getenv("KILN_TEST_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

var debian struct {
	mu  sync.Mutex
	img v1.Image
}

// DebianImage returns a debian:bookworm minbase image for tests, built once
// by debootstrap and cached under CacheDir. The test is skipped (SkipHost)
// when that cannot be done here (debootstrap missing, not root, archive unreachable).
func DebianImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := NewDebianImage(context.Background(), CacheDir())
	var skip *SkipError
	if errors.As(err, &skip) {
		SkipHost(t, skip.Reason)
	}
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// PushDebian pushes the debian image to REGISTRY/library/debian:bookworm
// and returns that reference.
func PushDebian(t testing.TB, registry string) string {
	t.Helper()
	return Push(t, DebianImage(t), registry+"/library/debian:bookworm")
}

// NewDebianImage returns the debian:bookworm base: the rootfs of
// `debootstrap --variant=minbase bookworm` without apt's downloaded
// packages and lists, as one layer, platform linux/amd64, Cmd ["bash"],
// the default PATH — what peers.sh pushes as library/debian:bookworm.
//
// cacheDir keeps debian-bookworm.tar (the rootfs, as peers.sh tars it) and
// debian-bookworm.tar.gz (the layer blob, so later runs do not compress
// 120 MB again). Processes building it at once wait for each other.
func NewDebianImage(ctx context.Context, cacheDir string) (v1.Image, error) {
	debian.mu.Lock()
	defer debian.mu.Unlock()
	if debian.img != nil {
		return debian.img, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, &SkipError{fmt.Sprintf("creating fixture cache %s: %v (set KILN_TEST_CACHE)", cacheDir, err)}
	}
	unlock, err := lockPath(filepath.Join(cacheDir, "debian-bookworm.lock"))
	if errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist) {
		return nil, &SkipError{fmt.Sprintf("locking fixture cache %s: %v (set KILN_TEST_CACHE)", cacheDir, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("locking fixture cache %s: %w", cacheDir, err)
	}
	defer unlock()

	l, err := cachedDebianLayer(filepath.Join(cacheDir, "debian-bookworm.tar"), func(rootfs string) error {
		return makeDebianRootfs(ctx, cacheDir, rootfs)
	})
	if err != nil {
		return nil, err
	}
	img, err := baseImage(plainLayer{l}, "bash")
	if err != nil {
		return nil, err
	}
	debian.img = img
	return img, nil
}

func makeDebianRootfs(ctx context.Context, cacheDir, dest string) error {
	seed, ok := os.LookupEnv("KILN_TEST_DEBIAN_SEED")
	if !ok {
		seed = peersDebianTar
	}
	if seed != "" && exists(seed) {
		return writeAtomic(dest, func() (io.ReadCloser, error) { return os.Open(seed) })
	}

	debootstrap, err := exec.LookPath("debootstrap")
	if err != nil {
		if debootstrap, err = exec.LookPath("/usr/sbin/debootstrap"); err != nil {
			return &SkipError{"debootstrap is missing: apt-get install -y debootstrap"}
		}
	}
	if os.Geteuid() != 0 {
		return &SkipError{"debootstrap needs root to build the debian base"}
	}
	dir, err := os.MkdirTemp(cacheDir, "debootstrap-")
	if err != nil {
		return fmt.Errorf("creating debootstrap directory: %w", err)
	}
	defer removeChroot(dir)

	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, debootstrap, "--variant=minbase", "bookworm", dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return &SkipError{fmt.Sprintf("debootstrap --variant=minbase bookworm: %v\n%s", err, tail(out, 20))}
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
	// GNU tar, with peers.sh's flags: the same tool gives the same shape.
	if out, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "-C", dir, "-cf", tmp, ".").CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tarring debian rootfs: %v\n%s", err, tail(out, 20))
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("caching debian rootfs: %w", err)
	}
	return nil
}

// removeChroot deletes a debootstrap target. A failed debootstrap can leave
// /proc or /sys mounted inside it, and RemoveAll would then walk the host's
// proc and sys: unmount first, and keep the directory if that fails.
func removeChroot(dir string) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return
	}
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && strings.HasPrefix(fields[1], dir+"/") {
			mounts = append(mounts, fields[1])
		}
	}
	f.Close()
	slices.Sort(mounts)
	slices.Reverse(mounts) // children before parents
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			return
		}
	}
	os.RemoveAll(dir)
}

// writeAtomic copies what open returns to dest through a temporary file.
func writeAtomic(dest string, open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Dir(dest), filepath.Base(dest)+".tmp-*")
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), dest)
}

// lockPath holds an flock on path until the returned function is called.
// The lock file stays: it lives in the cache, not in anything exported.
func lockPath(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, os.ErrPermission) {
		// Another user's cache can still be read: flock works on a
		// read-only descriptor.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cachedDebianLayer is the layer of the Debian rootfs tar at rootfs, made
// by mk when missing, and compressed once into rootfs.gz next to it with
// go-containerregistry's own compression at its default level, as `crane
// append` does it, so the digest matches peers.sh's.
func cachedDebianLayer(rootfs string, mk func(rootfs string) error) (v1.Layer, error) {
	blob := rootfs + ".gz"
	if !exists(rootfs) {
		if err := mk(rootfs); err != nil {
			return nil, err
		}
	}
	if !exists(blob) {
		l, err := tarball.LayerFromFile(rootfs, tarball.WithMediaType(types.DockerLayer))
		if err != nil {
			return nil, fmt.Errorf("compressing %s: %w", rootfs, err)
		}
		if err := writeAtomic(blob, l.Compressed); err != nil {
			return nil, fmt.Errorf("caching compressed debian layer: %w", err)
		}
	}
	l, err := tarball.LayerFromFile(blob, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, fmt.Errorf("reading cached debian layer %s: %w", blob, err)
	}
	return l, nil
}
