package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestNoOpRebuildWritesNothing: a rebuild that changed nothing, with -t and
// an OCI archive output, creates, rewrites or removes no file of the
// store or of its outputs: no log directory, no context memo, no image
// record, no archive, no features cache (kiln's store records which step
// records and layers were used only by their times, which this ignores).
func TestNoOpRebuildWritesNothing(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Dockerfile"), fmt.Sprintf("FROM %s/library/busybox:latest\nCOPY src/ /src/\nRUN echo built > /built\n", reg))
	for i := 0; i < 300; i++ {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("src/d%d/f%d.txt", i%7, i)), fmt.Sprint(i))
	}
	root, out := t.TempDir(), t.TempDir()
	build := func() {
		t.Helper()
		log, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", "noop/app:1",
			"-o", "type=oci,dest="+filepath.Join(out, "app.tar"), dir)
		if code != 0 {
			t.Fatalf("build: exit %d\n%s", code, log)
		}
	}
	build()
	build() // a first rebuild may still settle what the cold one left
	before := files(t, root, out)
	build()
	after := files(t, root, out)
	for p, id := range after {
		if old, ok := before[p]; !ok {
			t.Errorf("the no-op rebuild created %s", p)
		} else if old != id {
			t.Errorf("the no-op rebuild rewrote %s", p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("the no-op rebuild removed %s", p)
		}
	}
}

// files maps every path under dirs to its inode and change time: a file
// replaced (written and renamed over) or written in place changes them.
// Directories are left out but for their existence, as are the times the
// store touches to record use.
func files(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			id := fmt.Sprintf("ino %d size %d", st.Ino, st.Size)
			if e.Type().IsRegular() && filepath.Base(filepath.Dir(p)) != "steps" {
				id += fmt.Sprintf(" mtime %d", fi.ModTime().UnixNano())
			}
			m[p] = id
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	return m
}
