package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/testutil"
)

func TestRun(t *testing.T) {
	want, _ := testutil.BusyboxImage(t).Digest() // skips without busybox-static
	ctx := context.Background()

	t.Run("layout", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "base")
		if err := run(ctx, []string{"-busybox", "-o", dir}); err != nil {
			t.Fatal(err)
		}
		ii, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		im, err := ii.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 || im.Manifests[0].Digest != want {
			t.Errorf("index %+v, want busybox %s", im.Manifests, want)
		}
	})

	// Served, then stopped at once: mkbase's own push must leave no
	// connection behind that keeps the server from stopping. Whether the
	// push's HTTP client dials a connection it never uses depends on
	// timing, so this runs several times.
	t.Run("serve", func(t *testing.T) {
		for range 10 {
			serveOnce(t, ctx, want)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"-o", "x"}, {"-busybox"}} {
			if err := run(ctx, args); err == nil {
				t.Errorf("%v accepted", args)
			}
		}
	})
}

// serveOnce runs mkbase -serve, checks the image it serves and stops it.
func serveOnce(t *testing.T, ctx context.Context, want v1.Hash) {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-busybox", "-serve", "127.0.0.1:0", "-addr-file", addrFile}) }()
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(addrFile)
		addr = strings.TrimSpace(string(b))
	}
	if addr == "" {
		cancel()
		t.Fatalf("no address written: %v", <-done)
	}
	ref, err := name.ParseReference(addr + "/library/busybox:latest")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref)
	if err != nil || desc.Digest != want {
		t.Errorf("served %v (%v), want %s", desc, err, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(addrFile); err == nil {
		t.Error("address file left after shutdown")
	}
}
