package copier

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// runCaseOverlay runs a copy case as a step does, into an overlay whose
// lower layer is the case's destination tree, twice: through the mount
// only, and with the upper directory given (Options.Upper), which writes
// the directories the copy makes there directly. Both must leave the
// same merged tree, the same upper directory (whiteouts and opaque
// markers included: it becomes the layer) and the same error.
func runCaseOverlay(t *testing.T, src, dst func(builder), op func(srcRoot string) Op) {
	t.Helper()
	tmp := t.TempDir()
	srcRoot, lower := caseTrees(t, tmp, "lower", src, dst)

	type result struct{ merged, upper, err string }
	run := func(name string, direct bool) result {
		dir := filepath.Join(tmp, name)
		upper, work, mnt := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
		for _, d := range []string{upper, work, mnt} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mount("overlay", mnt, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
			t.Skipf("mounting an overlay: %v", err)
		}
		defer unix.Unmount(mnt, unix.MNT_DETACH)
		opt := Options{Workers: 4}
		if direct {
			opt.Upper = upper
		}
		var r result
		if err := DoWith(srcRoot, mnt, op(srcRoot), opt); err != nil {
			r.err = err.Error()
		}
		r.merged = listing(t, mnt)
		r.upper = overlayListing(t, upper)
		return r
	}
	via, direct := run("via-mount", false), run("direct", true)
	if via.err != direct.err {
		t.Errorf("error through the mount %q, with the upper directory %q", via.err, direct.err)
	}
	if via.merged != direct.merged {
		t.Errorf("merged tree differs\nthrough the mount:\n%s\nwith the upper directory:\n%s", via.merged, direct.merged)
	}
	if via.upper != direct.upper {
		t.Errorf("upper directory differs\nthrough the mount:\n%s\nwith the upper directory:\n%s", via.upper, direct.upper)
	}
}

// overlayListing is listing with the overlay's own markers of each entry.
func overlayListing(t *testing.T, root string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(listing(t, root), "\n"), "\n")
	for i, line := range lines {
		rel := strings.SplitN(line, " ", 2)[0]
		for _, x := range []string{"trusted.overlay.opaque", "trusted.overlay.impure", "trusted.overlay.origin"} {
			v := make([]byte, 256)
			if n, err := unix.Lgetxattr(filepath.Join(root, rel), x, v); err == nil {
				lines[i] += " " + x + "=" + string(v[:n])
			}
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
