package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/initbin"
	"github.com/kiln-build/kiln/internal/testutil"
)

// TestEmbeddedIsCurrent checks that the kiln-init embedded in this build
// is the one these sources make (the build is reproducible): a stale one
// would have the other tests run the old init.
func TestEmbeddedIsCurrent(t *testing.T) {
	embedded := initbin.Binary()
	if embedded == nil {
		testutil.SkipHost(t, "kiln-init is not embedded: make init (make test does) builds it")
	}
	if _, err := exec.LookPath("go"); err != nil {
		testutil.SkipHost(t, "needs the go command to build kiln-init")
	}
	out := filepath.Join(t.TempDir(), "kiln-init")
	// The flags of the Makefile's init target.
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", out, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kiln-init: %v\n%s", err, msg)
	}
	fresh, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, embedded) {
		t.Fatal("the embedded kiln-init is not built from these sources: run make init (make test and make build do) before testing")
	}
}

// TestDeps keeps kiln-init small: what it links is paid at every RUN
// step, in exec, page faults and package initialisation.
func TestDeps(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testutil.SkipHost(t, "needs the go command to list kiln-init's dependencies")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"net/http", "google.golang.org/protobuf", "github.com/moby/buildkit",
		"github.com/google/go-containerregistry", "compress/", "github.com/klauspost",
		"github.com/kiln-build/kiln/executor/copier", "github.com/spf13/cobra",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == strings.TrimSuffix(f, "/") || strings.HasPrefix(dep, f) || strings.HasPrefix(dep, f+"/") {
				t.Errorf("kiln-init links %s", dep)
			}
		}
	}
}
