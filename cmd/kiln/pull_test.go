package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// TestPull: without --pull a name recorded in the store by -t shadows the
// registry's image of that name; with --pull the registry's wins (FROM,
// COPY --from and RUN --mount from= alike), a tag moved in the registry is
// seen, and a name the registry lacks fails the build even though the
// store has it. Stage names and scratch need no registry.
func TestPull(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	busybox := reg + "/library/busybox:latest"
	x, gone := reg+"/team/x:1", reg+"/team/gone:1"
	// pushWhich puts in the registry, under ref, busybox with /which
	// holding content.
	pushWhich := func(ref, content string) {
		t.Helper()
		testutil.Push(t, testutil.ImageOn(t, testutil.BusyboxImage(t),
			testutil.CraftedLayer(t, testutil.File("which", 0o644, content))), ref)
	}
	pushWhich(x, "remote 1\n")

	root := t.TempDir()
	local := t.TempDir()
	writeFile(t, filepath.Join(local, "which"), "local\n")
	writeFile(t, filepath.Join(local, "Dockerfile"), "FROM "+busybox+"\nCOPY which /which\n")
	for _, name := range []string{x, gone} {
		if out, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", name, local); code != 0 {
			t.Fatalf("building %s into the store: exit %d\n%s", name, code, out)
		}
	}

	// build builds df and returns /which, /copied and /mounted of its
	// result, the output and the exit code.
	build := func(df string, args ...string) (map[string]string, string, int) {
		t.Helper()
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "Dockerfile"), df)
		writeFile(t, filepath.Join(dir, "which"), "context\n")
		dest := filepath.Join(t.TempDir(), "rootfs")
		out, code := kiln(t, append(append([]string{"build", "--root", root, "--progress=plain", "-o", "type=local,dest=" + dest}, args...), dir)...)
		if code != 0 {
			return nil, out, code
		}
		files := map[string]string{}
		for _, f := range []string{"which", "copied", "mounted"} {
			if b, err := os.ReadFile(filepath.Join(dest, f)); err == nil {
				files[f] = string(b)
			}
		}
		return files, out, code
	}
	fromX := "FROM " + x + "\n"
	copyX := "FROM scratch\nCOPY --from=" + x + " /which /copied\n"
	mountX := "FROM " + busybox + "\nRUN --mount=from=" + x + ",target=/m cat /m/which > /mounted\n"
	stages := "FROM scratch AS a\nCOPY which /which\nFROM a\n"
	check := func(what, df, file, want string, args ...string) {
		t.Helper()
		files, out, code := build(df, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", what, code, out)
		}
		if files[file] != want {
			t.Errorf("%s: /%s = %q, want %q\n%s", what, file, files[file], want, out)
		}
	}

	check("FROM, store first", fromX, "which", "local\n")
	check("FROM --pull", fromX, "which", "remote 1\n", "--pull")
	check("COPY --from, store first", copyX, "copied", "local\n")
	check("COPY --from --pull", copyX, "copied", "remote 1\n", "--pull")
	check("RUN --mount from=, store first", mountX, "mounted", "local\n")
	check("RUN --mount from= --pull", mountX, "mounted", "remote 1\n", "--pull")
	check("stages and scratch --pull", stages, "which", "context\n", "--pull")

	// The tag moves: --pull sees it (a new base digest, a new cache key),
	// and the store's name is untouched by it.
	pushWhich(x, "remote 2\n")
	check("FROM --pull after the tag moved", fromX, "which", "remote 2\n", "--pull")
	check("COPY --from --pull after the tag moved", copyX, "copied", "remote 2\n", "--pull")
	check("FROM, store first after a --pull", fromX, "which", "local\n")

	// A name only the store has: fine without --pull, an error naming it
	// with --pull.
	check("FROM a store-only name", "FROM "+gone+"\n", "which", "local\n")
	_, out, code := build("FROM "+gone+"\n", "--pull")
	if code != 1 || !strings.Contains(out, gone) || !strings.Contains(out, "no such image") || !strings.Contains(out, "without --pull") {
		t.Errorf("FROM a store-only name with --pull: exit %d, want 1 and an error naming %s, saying the registry lacks it and that the store has it:\n%s", code, gone, out)
	}
}
