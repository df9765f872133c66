package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

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
