package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/internal/testutil"
)

func storeKiln(t *testing.T, args ...string) string {
	t.Helper()
	out, code := kiln(t, args...)
	if code != 0 {
		t.Fatalf("kiln %s exited %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func storeDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSaveLoad: an image loaded into one store, saved in both formats and
// loaded into another keeps its manifest digest, and lists and removes
// under every spelling of its name.
func TestSaveLoad(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := testutil.BusyboxImage(t)
	want := storeDigest(t, base)
	src := filepath.Join(dir, "src.tar")
	if err := export.OCIArchive(ctx, base, src, []string{"test/busybox:1", "registry.example.com:5000/bb:2"}); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	out := storeKiln(t, "--root", root, "load", "-i", src)
	for _, n := range []string{"Loaded image: test/busybox:1", "Loaded image: registry.example.com:5000/bb:2"} {
		if !strings.Contains(out, n) {
			t.Errorf("load output lacks %q:\n%s", n, out)
		}
	}
	out = storeKiln(t, "--root", root, "images")
	id, _ := base.ConfigName()
	for _, row := range [][]string{
		{"REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"},
		{"registry.example.com:5000/bb", "2", id.Hex[:12]},
		{"test/busybox", "1", id.Hex[:12]},
	} {
		if !storeHasRow(out, row) {
			t.Errorf("images output lacks a row %v:\n%s", row, out)
		}
	}
	if out := storeKiln(t, "--root", root, "images", "-q"); strings.TrimSpace(out) != id.Hex[:12] {
		t.Errorf("images -q = %q, want %s", out, id.Hex[:12])
	}

	for _, tc := range []struct {
		format string
		read   func(path string) (v1.Image, error)
	}{
		{"docker", func(p string) (v1.Image, error) { return tarball.ImageFromPath(p, nil) }},
		{"oci", storeReadOCIArchive(t)},
	} {
		t.Run(tc.format, func(t *testing.T) {
			saved := filepath.Join(t.TempDir(), "saved.tar")
			storeKiln(t, "--root", root, "save", "docker.io/test/busybox:1", "-o", saved, "--format", tc.format)
			img, err := tc.read(saved)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(img); err != nil {
				t.Errorf("saved image does not validate: %v", err)
			}
			if got := storeDigest(t, img); got != want {
				t.Errorf("saved digest %s, want %s", got, want)
			}
			root2 := filepath.Join(t.TempDir(), "root")
			out := storeKiln(t, "--root", root2, "load", "-i", saved)
			if tc.format == "docker" {
				// and from stdin, as after docker save |
				cmd := exec.Command(kilnBin, "--root", filepath.Join(t.TempDir(), "root"), "load", "-i", "-")
				in, err := os.Open(saved)
				if err != nil {
					t.Fatal(err)
				}
				defer in.Close()
				cmd.Stdin = in
				if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "Loaded image: test/busybox:1") {
					t.Errorf("load -i - < archive: %v\n%s", err, b)
				}
			}
			if !strings.Contains(out, "Loaded image: test/busybox:1") {
				t.Errorf("load output:\n%s", out)
			}
			resaved := filepath.Join(t.TempDir(), "resaved.tar")
			storeKiln(t, "--root", root2, "save", "test/busybox:1", "-o", resaved, "--format", tc.format)
			img, err = tc.read(resaved)
			if err != nil {
				t.Fatal(err)
			}
			if got := storeDigest(t, img); got != want {
				t.Errorf("digest after save → load → save: %s, want %s", got, want)
			}
		})
	}

	// du and prune leave the named images whole
	out = storeKiln(t, "--root", root, "du")
	for _, w := range []string{"layers (unpacked)", "blobs", "images", "total"} {
		if !strings.Contains(out, w) {
			t.Errorf("du output lacks %q:\n%s", w, out)
		}
	}
	out = storeKiln(t, "--root", root, "prune", "--all")
	if !strings.Contains(out, "Total reclaimed space") {
		t.Errorf("prune output:\n%s", out)
	}
	storeKiln(t, "--root", root, "save", "test/busybox:1", "-o", filepath.Join(dir, "after-prune.tar"))

	out = storeKiln(t, "--root", root, "rmi", "test/busybox:1", "registry.example.com:5000/bb:2")
	if !strings.Contains(out, "Untagged: test/busybox:1") || !strings.Contains(out, "Untagged: registry.example.com:5000/bb:2") {
		t.Errorf("rmi output:\n%s", out)
	}
	if out := storeKiln(t, "--root", root, "images"); strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("images after rmi:\n%s", out)
	}
	if out, code := kiln(t, "--root", root, "rmi", "test/busybox:1"); code != 1 || !strings.Contains(out, "no such image") {
		t.Errorf("rmi of a missing image: exit %d\n%s", code, out)
	}
	if out, code := kiln(t, "--root", root, "save", "test/busybox:1", "-o", filepath.Join(dir, "x.tar")); code != 1 || !strings.Contains(out, "no such image") {
		t.Errorf("save of a missing image: exit %d\n%s", code, out)
	}
	// the layers went with prune once no name used them
	out = storeKiln(t, "--root", root, "prune", "--all")
	if strings.Contains(out, "0 layers") {
		t.Errorf("prune after rmi removed no layer:\n%s", out)
	}
}

func storeHasRow(out string, fields []string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(l), " ") == strings.Join(fields, " ") ||
			strings.HasPrefix(strings.Join(strings.Fields(l), " "), strings.Join(fields, " ")+" ") {
			return true
		}
	}
	return false
}

// storeReadOCIArchive reads an OCI archive independently of kiln's loader:
// go-containerregistry reads layouts from directories only, so tar unpacks.
func storeReadOCIArchive(t *testing.T) func(string) (v1.Image, error) {
	return func(p string) (v1.Image, error) {
		dir := t.TempDir()
		if out, err := storeUntar(p, dir); err != nil {
			t.Fatalf("tar: %v\n%s", err, out)
		}
		lp, err := layout.FromPath(dir)
		if err != nil {
			return nil, err
		}
		idx, err := lp.ImageIndex()
		if err != nil {
			return nil, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		return idx.Image(m.Manifests[0].Digest)
	}
}

// TestStoreUsage: command-line mistakes exit 2 with a message.
func TestStoreUsage(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"save", "app"}, "-o FILE"},
		{[]string{"save", "-o", "x.tar"}, "exactly one image NAME"},
		{[]string{"save", "app", "-o", "x.tar", "--format", "zip"}, "--format zip"},
		{[]string{"load"}, "-i FILE"},
		{[]string{"load", "-i", "x", "y"}, "no arguments"},
		{[]string{"rmi"}, "at least one image NAME"},
		{[]string{"rmi", "Bad Name"}, "image name"},
		{[]string{"images", "x"}, "no arguments"},
		{[]string{"prune", "--filter", "label=x"}, "until=DURATION"},
		{[]string{"prune", "--filter", "until=soon"}, "duration"},
		{[]string{"prune", "--keep-storage", "lots"}, "--keep-storage"},
		{[]string{"du", "x"}, "no arguments"},
	} {
		out, code := kiln(t, append([]string{"--root", root}, tc.args...)...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("kiln %s: exit %d, want 2 and %q:\n%s", strings.Join(tc.args, " "), code, tc.want, out)
		}
	}
}

func storeUntar(archive, dir string) ([]byte, error) {
	return exec.Command("tar", "-xf", archive, "-C", dir).CombinedOutput()
}

// TestPruneWaitsForBuilds: while another kiln process has the store open
// (here the test holds the shared lock every open store holds), kiln prune
// says that it waits, removes nothing, and goes ahead once the store is
// free.
func TestPruneWaitsForBuilds(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	src := filepath.Join(dir, "src.tar")
	if err := export.OCIArchive(ctx, testutil.BusyboxImage(t), src, []string{"bb"}); err != nil {
		t.Fatal(err)
	}
	storeKiln(t, "--root", root, "load", "-i", src)
	storeKiln(t, "--root", root, "rmi", "bb") // its layer is now prunable

	lock, err := os.OpenFile(filepath.Join(root, "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}

	if out, code := kiln(t, "--root", root, "prune", "--no-wait"); code != 1 || !strings.Contains(out, "in use by another kiln process") {
		t.Errorf("prune --no-wait while the store is in use: exit %d\n%s", code, out)
	}

	cmd := exec.Command(kilnBin, "--root", root, "prune")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil || !strings.Contains(line, "waiting for them to finish") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("prune while the store is in use said %q (%v), want that it waits", line, err)
	}
	if layers, _ := os.ReadDir(filepath.Join(root, "layers")); len(layers) != 1 {
		t.Errorf("prune removed layers while the store was in use: %d left", len(layers))
	}
	lock.Close() // the "build" ends
	if err := cmd.Wait(); err != nil {
		t.Fatalf("prune: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(stdout.String(), "1 layer,") {
		t.Errorf("prune output:\n%s", stdout.String())
	}
	if layers, _ := os.ReadDir(filepath.Join(root, "layers")); len(layers) != 0 {
		t.Errorf("%d layers left after prune", len(layers))
	}
}

// TestBuiltImages: images built with -t are listed, survive prune --all,
// travel through save and load into another store, and are bases there
// with no registry; once untagged, prune --all empties the store.
func TestBuiltImages(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	dir := t.TempDir()
	root, root2 := filepath.Join(dir, "root"), filepath.Join(dir, "root2")
	ctxDir := filepath.Join(dir, "ctx")
	os.MkdirAll(ctxDir, 0o755)
	df := filepath.Join(ctxDir, "Dockerfile")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(df, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("FROM " + reg + "/library/busybox:latest\nRUN echo hi > /hi\n")
	iid := filepath.Join(dir, "iid")
	storeKiln(t, "build", "--root", root, "--progress=plain", "-t", "app:1", "-t", "app:2", "--iidfile", iid, ctxDir)
	id, err := os.ReadFile(iid)
	if err != nil {
		t.Fatal(err)
	}
	short := strings.TrimPrefix(string(id), "sha256:")[:12]
	out := storeKiln(t, "--root", root, "images")
	for _, row := range [][]string{{"app", "1", short}, {"app", "2", short}} {
		if !storeHasRow(out, row) {
			t.Errorf("images lacks %v:\n%s", row, out)
		}
	}

	// prune --all keeps what the names use: a build FROM app:1 still works
	storeKiln(t, "--root", root, "prune", "--all")
	derived := func(root string) {
		t.Helper()
		write("FROM app:1\nRUN cat /hi > /derived\n")
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		storeKiln(t, "build", "--root", root, "--progress=plain", "-o", "type=local,dest="+rootfs, ctxDir)
		if got, err := os.ReadFile(filepath.Join(rootfs, "derived")); err != nil || string(got) != "hi\n" {
			t.Errorf("/derived = %q, %v", got, err)
		}
	}
	derived(root)

	archive := filepath.Join(dir, "app.tar")
	storeKiln(t, "--root", root, "save", "app:1", "-o", archive)
	storeKiln(t, "--root", root2, "load", "-i", archive)
	derived(root2)

	storeKiln(t, "--root", root, "rmi", "app:1", "app:2")
	storeKiln(t, "--root", root, "prune", "--all")
	for _, d := range []string{"layers", "blobs/sha256", "steps"} {
		if ents, _ := os.ReadDir(filepath.Join(root, d)); len(ents) != 0 {
			t.Errorf("%s: %d entries left after rmi and prune --all", d, len(ents))
		}
	}
}

// TestStoreLockHeldUntilDone: push and save from the store keep it locked
// against prune until they have read every blob, even when a garbage
// collection runs after they looked the image up (before the fix the lock
// was a finalized *os.File, and a concurrent prune deleted the layers being
// pushed).
func TestStoreLockHeldUntilDone(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	src := filepath.Join(dir, "src.tar")
	base := testutil.BusyboxImage(t)
	if err := export.OCIArchive(ctx, base, src, []string{"bb:1"}); err != nil {
		t.Fatal(err)
	}
	storeKiln(t, "--root", root, "load", "-i", src)
	reg := testutil.Registry(t)

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"save", []string{"--root", root, "save", "bb:1", "-o", filepath.Join(dir, "saved.tar")}},
		{"push", []string{"--root", root, "push", "bb:1", reg + "/bb:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hooked := false
			afterStoreRead = func() {
				hooked = true
				for i := 0; i < 3; i++ {
					runtime.GC()
				}
				// the untag makes the image's layers prunable: only the
				// lock of this command keeps them now
				storeKiln(t, "--root", root, "rmi", "bb:1")
				if out, code := kiln(t, "--root", root, "prune", "--all", "--no-wait"); code == 0 || !strings.Contains(out, "in use by another kiln process") {
					t.Errorf("prune --no-wait during %s: exit %d\n%s", tc.name, code, out)
				}
			}
			defer func() { afterStoreRead = func() {} }()
			cmd := newRootCmd()
			cmd.SetArgs(tc.args)
			var out strings.Builder
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			if err := cmd.ExecuteContext(ctx); err != nil {
				t.Fatalf("%s: %v\n%s", tc.name, err, out.String())
			}
			if !hooked {
				t.Fatal("the hook did not run")
			}
			// name it again for the next case
			storeKiln(t, "--root", root, "load", "-i", src)
		})
	}
	if _, err := tarball.ImageFromPath(filepath.Join(dir, "saved.tar"), nil); err != nil {
		t.Errorf("saved archive: %v", err)
	}
}

// storeBuildDir writes a Dockerfile into a fresh context directory.
func storeBuildDir(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestVerifyCommand: kiln verify finds a file deleted from a stored layer
// and exits 1; --repair drops the layer and the records that use it; the
// store is then clean, and the next build pulls the layer again and
// succeeds.
func TestVerifyCommand(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := filepath.Join(t.TempDir(), "root")
	ctxDir := storeBuildDir(t, "FROM "+reg+"/library/busybox:latest\nRUN echo hi > /hi\n")
	storeKiln(t, "build", "--root", root, "--progress=plain", ctxDir)
	if out := storeKiln(t, "--root", root, "verify"); !strings.Contains(out, "no problems") {
		t.Errorf("verify of a fresh store:\n%s", out)
	}

	// damage the base layer: the one holding bin/busybox
	victims, _ := filepath.Glob(filepath.Join(root, "layers", "*", "fs", "bin", "busybox"))
	if len(victims) != 1 {
		t.Fatalf("found %v", victims)
	}
	if err := os.Remove(victims[0]); err != nil {
		t.Fatal(err)
	}
	out, code := kiln(t, "--root", root, "verify")
	if code != 1 || !strings.Contains(out, "missing /bin/busybox") || !strings.Contains(out, "kiln verify --repair") {
		t.Errorf("verify of a damaged layer: exit %d\n%s", code, out)
	}
	out = storeKiln(t, "--root", root, "verify", "--repair")
	if !strings.Contains(out, "removed") {
		t.Errorf("verify --repair:\n%s", out)
	}
	if out := storeKiln(t, "--root", root, "verify"); !strings.Contains(out, "no problems") {
		t.Errorf("verify after repair:\n%s", out)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	storeKiln(t, "build", "--root", root, "--progress=plain", "-o", "type=local,dest="+rootfs, ctxDir)
	if _, err := os.Stat(filepath.Join(rootfs, "bin", "busybox")); err != nil {
		t.Errorf("the rebuilt image lacks the repaired file: %v", err)
	}
}

// TestRunMountSharingAndTmpfsSize: two stages building at once with a
// private cache mount of one id each see only their own writes; a tmpfs
// mount with size= is that size (writing past it fails with ENOSPC).
func TestRunMountSharingAndTmpfsSize(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := filepath.Join(t.TempDir(), "root")
	base := reg + "/library/busybox:latest"
	run := func(who string) string {
		return "RUN --mount=type=cache,id=shared-id,target=/c,sharing=private echo " + who + " > /c/who && sleep 1 && cat /c/who > /seen\n"
	}
	ctxDir := storeBuildDir(t, "FROM "+base+" AS a\n"+run("a")+
		"FROM "+base+" AS b\n"+run("b")+
		"FROM "+base+"\n"+
		"COPY --from=a /seen /a\nCOPY --from=b /seen /b\n"+
		"RUN --mount=type=tmpfs,target=/t,size=1m if dd if=/dev/zero of=/t/f bs=1024 count=2048 2>/dd.err; then echo wrote > /tmpfs; else echo failed > /tmpfs; fi; grep -o 'No space left on device' /dd.err >> /tmpfs; rm /dd.err\n")
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	storeKiln(t, "build", "--root", root, "--progress=plain", "--jobs", "2", "-o", "type=local,dest="+rootfs, ctxDir)
	for f, want := range map[string]string{"a": "a\n", "b": "b\n", "tmpfs": "failed\nNo space left on device\n"} {
		if got, err := os.ReadFile(filepath.Join(rootfs, f)); err != nil || string(got) != want {
			t.Errorf("/%s = %q, %v; want %q", f, got, err, want)
		}
	}
}

// TestPruneKeepsDebugState: prune --all leaves a state kept by
// --on-error=keep (and the layers under it) usable by kiln debug, and says
// so; once kiln debug --rm discards it, prune removes the layers.
func TestPruneKeepsDebugState(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := filepath.Join(t.TempDir(), "root")
	ctxDir := storeBuildDir(t, "FROM "+reg+"/library/busybox:latest\nRUN echo partial > /partial && false\n")
	log, code := kiln(t, "build", "--root", root, "--progress=plain", "--on-error=keep", ctxDir)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, log)
	}
	m := regexp.MustCompile(`kiln debug (\S+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no kiln debug hint in:\n%s", log)
	}
	out := storeKiln(t, "--root", root, "prune", "--all")
	if !strings.Contains(out, "0 layers,") || !strings.Contains(out, "kiln debug --rm") {
		t.Errorf("prune --all with a kept state:\n%s", out)
	}
	if out := storeKiln(t, "--root", root, "debug", m[1], "--", "cat", "/partial", "/bin/busybox"); !strings.Contains(out, "partial\n\x7fELF") {
		t.Errorf("debug after prune: %q", out[:min(len(out), 200)])
	}
	storeKiln(t, "--root", root, "debug", "--rm", m[1])
	out = storeKiln(t, "--root", root, "prune", "--all")
	if !strings.Contains(out, "1 layer,") {
		t.Errorf("prune --all after debug --rm:\n%s", out)
	}
}

// TestBadImageRecordWarns: one damaged image record does not stop images,
// du, prune or verify; it is named in a warning, and verify --repair
// removes it.
func TestBadImageRecordWarns(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	src := filepath.Join(dir, "src.tar")
	if err := export.OCIArchive(ctx, testutil.BusyboxImage(t), src, []string{"bb:1"}); err != nil {
		t.Fatal(err)
	}
	storeKiln(t, "--root", root, "load", "-i", src)
	if err := os.WriteFile(filepath.Join(root, "images", strings.Repeat("0", 64)+".json"), []byte("{\"name\":"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := storeKiln(t, "--root", root, "images")
	if !storeHasRow(out, []string{"bb", "1"}) {
		t.Errorf("images lacks bb:\n%s", out)
	}
	if !strings.Contains(out, "warning: skipping an unreadable image record") {
		t.Errorf("images gave no warning:\n%s", out)
	}
	storeKiln(t, "--root", root, "du")
	storeKiln(t, "--root", root, "prune")
	if out, code := kiln(t, "--root", root, "verify"); code != 1 || !strings.Contains(out, "image ") {
		t.Errorf("verify: exit %d\n%s", code, out)
	}
	storeKiln(t, "--root", root, "verify", "--repair")
	if out := storeKiln(t, "--root", root, "images"); strings.Contains(out, "warning") {
		t.Errorf("images after repair:\n%s", out)
	}
}
