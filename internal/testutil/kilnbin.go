package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RunWithKiln is a TestMain body for the packages whose tests run the kiln
// binary: it builds the command in pkgDir (static, as CI and users run it)
// into a temporary directory, stores its path in *bin, runs the tests and
// removes the binary. It does not return. KILN_TEST_RACE=1 builds the
// binary with the race detector.
func RunWithKiln(m *testing.M, pkgDir string, bin *string) {
	dir, err := os.MkdirTemp("", "kiln-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "kiln")
	build := exec.Command("go", "build", "-o", *bin, pkgDir)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("KILN_TEST_RACE") == "1" {
		// the race detector in the binary the tests run (it needs cgo)
		build = exec.Command("go", "build", "-race", "-o", *bin, pkgDir)
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building kiln: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// kiln's closing syncs stay in the command (no detached process
	// outlives a test and its temp dirs); TestDetachedSync covers the
	// other way.
	os.Setenv("KILN_SYNC", "wait")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
