//go:build linux

package main

import (
	"bytes"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGenerated fails when the committed tables are not what the
// generator writes from the profile and the system call numbers in
// go.mod: run go generate in executor/seccomp.
func TestGenerated(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testutil.SkipHost(t, "needs the go command to find the modules")
	}
	files, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(arches) {
		t.Fatalf("%d files for %d architectures", len(files), len(arches))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatalf("%v (run go generate in executor/seccomp)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the generator writes: run go generate in executor/seccomp", name)
		}
	}
}
