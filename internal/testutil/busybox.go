package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is the static busybox the busybox base is made of.
const BusyboxPath = "/bin/busybox"

// DefaultPath is the PATH of both base images, as in Docker Hub's.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrNoBusybox says the busybox-static package is not installed.
var ErrNoBusybox = errors.New(BusyboxPath + " is missing: apt-get install -y busybox-static")

var busybox struct {
	once  sync.Once
	tar   []byte
	layer v1.Layer
	err   error
}

// BusyboxRootfs returns the busybox root filesystem as an uncompressed
// tar, byte for byte what peers.sh gets from
// `tar --numeric-owner --mtime=@0 --sort=name -C r -cf bb.tar .`: GNU
// format, "./"-prefixed names, owners 0:0, mtime 0, one symlink per applet.
// Identical bytes give the identical layer, so this image and peers.sh's
// have the same digests.
func BusyboxRootfs() ([]byte, error) {
	loadBusybox()
	return busybox.tar, busybox.err
}

// NewBusyboxLayer returns the busybox root filesystem as a gzip layer, as
// `crane append` makes it.
func NewBusyboxLayer() (v1.Layer, error) {
	loadBusybox()
	return busybox.layer, busybox.err
}

// NewBusyboxImage returns the busybox base image: the layer, platform
// linux/amd64, Cmd ["sh"] and the default PATH.
func NewBusyboxImage() (v1.Image, error) {
	l, err := NewBusyboxLayer()
	if err != nil {
		return nil, err
	}
	return baseImage(l, "sh")
}

// BusyboxLayer is NewBusyboxLayer for tests; the test is skipped (SkipHost)
// when busybox-static is not installed.
func BusyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	l, err := NewBusyboxLayer()
	skipOrFail(t, err)
	return l
}

// BusyboxImage is NewBusyboxImage for tests; the test is skipped (SkipHost)
// when busybox-static is not installed.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := NewBusyboxImage()
	skipOrFail(t, err)
	return img
}

// PushBusybox pushes the busybox image to REGISTRY/library/busybox:latest
// and returns that reference.
func PushBusybox(t testing.TB, registry string) string {
	t.Helper()
	return Push(t, BusyboxImage(t), registry+"/library/busybox:latest")
}

func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNoBusybox) {
		SkipHost(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func loadBusybox() {
	busybox.once.Do(func() {
		busybox.tar, busybox.err = busyboxTar()
		if busybox.err != nil {
			return
		}
		b := busybox.tar
		// Uncompressed in, compressed by go-containerregistry at its
		// default level: exactly what `crane append` does with bb.tar.
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}, tarball.WithMediaType(types.DockerLayer))
		busybox.layer, busybox.err = plainLayer{l}, err
	})
}

// plainLayer hides a tarball layer's Descriptor method, whose empty (not
// nil) annotations map makes mutate's in-memory manifest differ from its
// own serialisation, which validate.Image reports. The bytes and digests
// are the same either way.
type plainLayer struct{ v1.Layer }

// baseImage puts l on an empty (Docker media type) image and sets the
// config as peers.sh's `crane mutate --set-platform linux/amd64 --cmd CMD
// --env PATH=…` does.
func baseImage(l v1.Layer, cmd string) (v1.Image, error) {
	return baseImageFor(l, cmd, v1.Platform{OS: "linux", Architecture: "amd64"})
}

// baseImageFor is baseImage for platform p (crane mutate --set-platform).
func baseImageFor(l v1.Layer, cmd string, p v1.Platform) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, fmt.Errorf("appending base layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading base config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Config.Cmd = []string{cmd}
	cfg.Config.Env = append(cfg.Config.Env, DefaultPath)
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting base config: %w", err)
	}
	return img, nil
}

func busyboxTar() ([]byte, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoBusybox
	}
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w", err)
	}
	return busyboxTarOf(bin)
}

// busyboxTarOf is the busybox root filesystem around bin, a busybox binary
// of any architecture; the applets are the host busybox's, as peers.sh
// lists them.
func busyboxTarOf(bin []byte) ([]byte, error) {
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			applets = append(applets, a)
		}
	}

	var w gnuTar
	w.dir("./", 0o755)
	w.dir("./bin/", 0o755)
	bins := append(slices.Clone(applets), "busybox")
	slices.Sort(bins)
	bins = slices.Compact(bins)
	for _, a := range bins {
		if a == "busybox" {
			w.file("./bin/busybox", 0o755, bin)
		} else {
			w.symlink("./bin/"+a, "busybox")
		}
	}
	w.dir("./dev/", 0o755)
	w.dir("./etc/", 0o755)
	w.file("./etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	w.file("./etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	w.dir("./proc/", 0o755)
	w.dir("./root/", 0o755)
	w.dir("./sys/", 0o755)
	w.dir("./tmp/", 0o1777)
	return w.close()
}
