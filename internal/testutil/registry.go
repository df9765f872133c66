// Package testutil holds the fixtures kiln's tests share: an in-process
// registry and base images (busybox, debian:bookworm) built on this machine
// from Debian packages, so no test needs the network or Docker Hub. The
// images have the same shape as the ones ../shared/conformance/peers.sh
// gives BuildKit, so tests and conformance runs start from the same base.
package testutil

import (
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry starts an in-process registry on 127.0.0.1 for the test and
// returns its address, "127.0.0.1:PORT". go-containerregistry speaks plain
// HTTP to loopback addresses, so references under it need no options.
func Registry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Push writes img to ref and returns ref.
func Push(t testing.TB, img v1.Image, ref string) string {
	t.Helper()
	if err := push(img, ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

func push(img v1.Image, ref string) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img); err != nil {
		return err
	}
	return nil
}
