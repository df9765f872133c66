package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/kiln-build/kiln/internal/testutil"
)

// A chain may hold the same layer at several positions: a base image that
// repeats a blob, repeated identical COPY lines, two steps making the same
// change. Every later RUN and COPY must still mount (overlayfs refuses one
// directory twice among its lowers), and the view must be the chain's.
func TestRepeatedLayers(t *testing.T) {
	needRoot(t)
	reg := testutil.Registry(t)
	base := testutil.BusyboxImage(t)
	dup, err := random.Layer(64, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	// busybox, then the same layer three times.
	repeated, err := mutate.AppendLayers(base, dup, dup, dup)
	if err != nil {
		t.Fatal(err)
	}
	ref := testutil.Push(t, repeated, reg+"/test/repeated:latest")

	root, dir := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "same\n")
	writeFile(t, filepath.Join(dir, "Dockerfile"), "FROM "+ref+`
COPY f /f
COPY f /f
RUN echo x > /x && rm /x
RUN echo x > /x && rm /x
RUN cat /f > /seen && ls / > /dev/null
COPY f /g
`)
	out := filepath.Join(t.TempDir(), "rootfs")
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "-o", "type=local,dest="+out, dir); code != 0 {
		t.Fatalf("exit %d\n%s", code, log)
	}
	for _, name := range []string{"seen", "g"} {
		if b, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(b) != "same\n" {
			t.Errorf("/%s = %q, %v; want \"same\\n\"", name, b, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(out, "x")); !os.IsNotExist(err) {
		t.Errorf("/x: %v; want it deleted", err)
	}
	checkNoLeaks(t, root)
}
