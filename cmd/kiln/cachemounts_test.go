package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/trace"
)

// mountDockerfile fills the cache mount "mods" on its first run (COLD: a
// 200 kB file) and adds one small file on every run unless READONLY is
// set; /result says whether the mount came warm.
func mountDockerfile(base string) string {
	return "FROM " + base + "\nCOPY greeting /greeting\n" +
		"ARG READONLY\n" +
		"RUN --mount=type=cache,id=mods,target=/cache sh -c 'if [ -e /cache/warm ]; then echo WARM; else echo COLD; touch /cache/warm; head -c 200000 /dev/urandom > /cache/big; fi > /result; [ -n \"$READONLY\" ] || mktemp /cache/run.XXXXXX'\n"
}

// mountResult builds ctxDir on a fresh root with args, exporting the
// rootfs, and returns /result and the output.
func mountResult(t *testing.T, ctxDir string, args ...string) (string, string) {
	t.Helper()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	all := append([]string{"build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest=" + rootfs}, args...)
	out, code := kiln(t, append(all, ctxDir)...)
	if code != 0 {
		t.Fatalf("kiln %v exited %d:\n%s", args, code, out)
	}
	b, err := os.ReadFile(filepath.Join(rootfs, "result"))
	if err != nil {
		t.Fatalf("reading /result: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(b)), out
}

type mountsSection struct {
	Raw    json.RawMessage `json:"-"`
	Mounts []struct {
		ID     string `json:"id"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	} `json:"mounts"`
}

// registryMounts reads the mounts section of the cache at ref.
func registryMounts(t *testing.T, ref string) mountsSection {
	t.Helper()
	cfg, err := fetchRemote(t, ref).RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var m mountsSection
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Mounts json.RawMessage `json:"mounts"`
	}
	if err := json.Unmarshal(cfg, &raw); err != nil {
		t.Fatal(err)
	}
	m.Raw = raw.Mounts
	return m
}

func setGreeting(t *testing.T, ctxDir, s string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ctxDir, "greeting"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCacheMountsRegistry: runner A fills a cache mount and exports it
// with mounts=true; runner B, on an empty root with a changed context,
// finds it warm, and its export adds a layer with only what changed; an
// export with nothing changed keeps the cache's digest, from the root that
// has the instance and from an empty one whose step was a hit.
func TestCacheMountsRegistry(t *testing.T) {
	needRoot(t)
	_, proxy, base := cacheRegistry(t)
	ref := proxy.Host + "/team/cache:mounts"
	to := "type=registry,ref=" + ref + ",mounts=true"
	from := "type=registry,ref=" + ref
	ctxDir := registryContext(t, mountDockerfile(base))

	res, out := mountResult(t, ctxDir, "--cache-to", to)
	if res != "COLD" || !strings.Contains(out, "1 cache mounts") {
		t.Fatalf("runner A: /result %q, want COLD and one cache mount exported:\n%s", res, out)
	}
	a := registryMounts(t, ref)
	if len(a.Mounts) != 1 || a.Mounts[0].ID != "mods" || len(a.Mounts[0].Layers) != 1 {
		t.Fatalf("runner A's cache mounts: %+v", a)
	}
	full := a.Mounts[0].Layers[0].Size

	setGreeting(t, ctxDir, "runner B\n")
	rootB := t.TempDir()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	tr := filepath.Join(t.TempDir(), "trace.json")
	out, code := kiln(t, "build", "--root", rootB, "--progress=plain", "-o", "type=local,dest="+rootfs,
		"--cache-from", from, "--cache-to", to, "--trace", tr, ctxDir)
	if code != 0 {
		t.Fatalf("runner B exited %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, "result")); strings.TrimSpace(string(b)) != "WARM" {
		t.Fatalf("runner B: /result %q, want WARM:\n%s", b, out)
	}
	// The COPY missed: the mount was restored while it ran.
	if e := restoredAhead(t, tr, "mods"); e.Args["seed"] != nil {
		t.Errorf("runner B: the seed restored ahead failed: %v", e.Args["seed"])
	}
	t.Logf("runner B:\n%s", out)
	b := registryMounts(t, ref)
	t.Logf("cache mounts after runner A: %s\nafter runner B: %s", a.Raw, b.Raw)
	if len(b.Mounts) != 1 || len(b.Mounts[0].Layers) != 2 || b.Mounts[0].Layers[0] != a.Mounts[0].Layers[0] {
		t.Fatalf("runner B's cache mounts: %+v, want A's layer and one more", b)
	}
	if diff := b.Mounts[0].Layers[1].Size; diff*10 > full {
		t.Errorf("runner B's new layer is %d bytes, the whole mount %d: want only the change", diff, full)
	}
	digest := headDigest(t, ref)

	// Nothing changed: B's step is a hit, its instance unchanged.
	out, code = kiln(t, "build", "--root", rootB, "--progress=plain", "--cache-from", from, "--cache-to", to, ctxDir)
	if code != 0 || !strings.Contains(out, "unchanged") {
		t.Fatalf("runner B again: exit %d, want an unchanged cache:\n%s", code, out)
	}
	// An empty root whose step is a hit carries the imported mount on,
	// and fetches none of it: nothing is restored ahead when no step runs.
	mountBlobs := map[string]bool{}
	for _, l := range b.Mounts[0].Layers {
		mountBlobs[l.Digest] = true
	}
	seen := len(proxy.Requests())
	tr = filepath.Join(t.TempDir(), "trace.json")
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-from", from, "--cache-to", to, "--trace", tr, ctxDir)
	if code != 0 || !strings.Contains(out, "unchanged") {
		t.Fatalf("runner C: exit %d, want an unchanged cache:\n%s", code, out)
	}
	allCached(t, out)
	if n := layerGETs(proxy.Requests()[seen:], mountBlobs); n != 0 {
		t.Errorf("runner C, all cached, downloaded %d cache mount layers", n)
	}
	if got := find(readTrace(t, tr), "restore cache mount ahead"); len(got) != 0 {
		t.Errorf("runner C, all cached, restored %d cache mounts ahead", len(got))
	}
	if got := headDigest(t, ref); got != digest {
		t.Errorf("the cache digest moved from %s to %s with nothing changed", digest, got)
	}

	// A runner whose step runs, restores the mount and changes nothing in
	// it exports the mount exactly as imported.
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--build-arg", "READONLY=1", "--cache-from", from, "--cache-to", to, ctxDir)
	if code != 0 {
		t.Fatalf("runner E exited %d:\n%s", code, out)
	}
	if e := registryMounts(t, ref); string(e.Raw) != string(b.Raw) {
		t.Errorf("runner E changed nothing in the mount but exported\n%s\nafter\n%s", e.Raw, b.Raw)
	}

	// Without mounts=true, runner D starts cold.
	setGreeting(t, ctxDir, "runner D\n")
	if res, out := mountResult(t, ctxDir, "--cache-from", "type=registry,ref="+base); res != "COLD" {
		t.Errorf("runner D: /result %q, want COLD:\n%s", res, out)
	}
}

// TestCacheMountsLocal: a cache directory carries cache mounts too, and a
// mount layer that does not match its digest is a warning: the step runs
// with an empty mount and the build succeeds.
func TestCacheMountsLocal(t *testing.T) {
	needRoot(t)
	_, _, base := cacheRegistry(t)
	dir := filepath.Join(t.TempDir(), "cache")
	ctxDir := registryContext(t, mountDockerfile(base))
	if res, out := mountResult(t, ctxDir, "--cache-to", "type=local,dest="+dir+",mounts=true"); res != "COLD" {
		t.Fatalf("first build: /result %q:\n%s", res, out)
	}
	setGreeting(t, ctxDir, "second\n")
	if res, out := mountResult(t, ctxDir, "--cache-from", "type=local,src="+dir); res != "WARM" {
		t.Fatalf("from the cache dir: /result %q, want WARM:\n%s", res, out)
	}

	// Damage the mount's layer, keeping its size.
	idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := v1.ParseIndexManifest(strings.NewReader(string(idx)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", ix.Manifests[0].Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", m.Config.Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	var ms mountsSection
	if err := json.Unmarshal(recs, &ms); err != nil || len(ms.Mounts) != 1 {
		t.Fatalf("records %s: %v", recs, err)
	}
	blob := filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(ms.Mounts[0].Layers[0].Digest, "sha256:"))
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	setGreeting(t, ctxDir, "third\n")
	tr := filepath.Join(t.TempDir(), "trace.json")
	res, out := mountResult(t, ctxDir, "--cache-from", "type=local,src="+dir, "--trace", tr)
	if res != "COLD" || strings.Count(out, `warning: cache mount "mods"`) != 1 {
		t.Fatalf("with a damaged mount layer: /result %q, want COLD and one warning:\n%s", res, out)
	}
	// It was found damaged while restored ahead of the step.
	if e := restoredAhead(t, tr, "mods"); e.Args["seed"] == nil {
		t.Errorf("the damaged seed restored ahead did not fail: %v", e.Args)
	}
}

// restoredAhead finds in the trace of a build that cache mount id was
// restored ahead — started before the step that uses it, and over when
// that step's command started — and returns its span.
func restoredAhead(t *testing.T, tracePath, id string) trace.Event {
	t.Helper()
	evs := readTrace(t, tracePath)
	var ahead []trace.Event
	for _, e := range find(evs, "restore cache mount ahead") {
		if e.Args["id"] == id {
			ahead = append(ahead, e)
		}
	}
	if len(ahead) != 1 {
		t.Fatalf("%d spans restore cache mount %q ahead, want 1", len(ahead), id)
	}
	a := ahead[0]
	var step *trace.Event
	for i, e := range evs {
		if strings.Contains(e.Name, "RUN --mount=type=cache,id="+id+",") {
			step = &evs[i]
		}
	}
	if step == nil {
		t.Fatalf("no RUN step using cache mount %q in the trace", id)
	}
	if a.TS >= step.TS {
		t.Errorf("cache mount %q was restored from %.0f µs, not before its step started (%.0f µs)", id, a.TS, step.TS)
	}
	for _, e := range find(evs, "run") {
		if e.Parent() == step.ID() && e.TS < a.TS+a.Dur {
			t.Errorf("the step ran (from %.0f µs) before cache mount %q was restored (%.0f µs)", e.TS, id, a.TS+a.Dur)
		}
	}
	return a
}

// TestCacheMountsRestoredAhead: under each sharing mode, a mount restored
// ahead is the instance the step gets, warm; two mounts of one id in two
// steps after the miss share one restore.
func TestCacheMountsRestoredAhead(t *testing.T) {
	needRoot(t)
	_, _, base := cacheRegistry(t)
	for _, sharing := range []string{"shared", "private", "locked"} {
		t.Run(sharing, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			run := "RUN --mount=type=cache,id=mods,target=/cache,sharing=" + sharing +
				" sh -c 'if [ -e /cache/warm ]; then echo WARM; else echo COLD; touch /cache/warm; fi >> /result'\n"
			ctxDir := registryContext(t, "FROM "+base+"\nCOPY greeting /greeting\n"+run+"RUN echo between\n"+run)
			if res, out := mountResult(t, ctxDir, "--cache-to", "type=local,dest="+dir+",mounts=true"); res != "COLD\nWARM" {
				t.Fatalf("first build: /result %q:\n%s", res, out)
			}
			setGreeting(t, ctxDir, "second\n")
			tr := filepath.Join(t.TempDir(), "trace.json")
			res, out := mountResult(t, ctxDir, "--cache-from", "type=local,src="+dir, "--trace", tr)
			if res != "WARM\nWARM" || strings.Contains(out, "warning") {
				t.Fatalf("from the cache dir: /result %q, want WARM twice and no warning:\n%s", res, out)
			}
			restoredAhead(t, tr, "mods")
		})
	}
}

// TestCacheMountsRootless: a rootless runner restores and exports cache
// mounts too — owners of the subuid range, and a removal (a whiteout made
// in the user namespace) that the next runner sees.
func TestCacheMountsRootless(t *testing.T) {
	needRootless(t)
	name, uid, gid := throwawayUser(t)
	dir := userTree(t, "kiln-rootless-mounts-", uid, gid)
	bin, home, ctxDir, cacheDir := filepath.Join(dir("bin"), "kiln"), dir("home"), dir("ctx"), dir("cache")
	copyFile(t, kilnBin, bin, 0o755)
	base := registryWithBases(t) + "/library/busybox:latest"
	writeFile(t, filepath.Join(ctxDir, "Dockerfile"), "FROM "+base+"\nCOPY greeting /greeting\n"+
		"RUN --mount=type=cache,id=mods,target=/cache sh -c 'if [ -e /cache/warm ]; then echo WARM gone=$(test -e /cache/gone && echo yes || echo no) $(stat -c %u:%g /cache/d); rm -f /cache/gone; else echo COLD; touch /cache/warm /cache/gone; mkdir /cache/d; chown 1234:2345 /cache/d; fi > /result; mktemp /cache/d/run.XXXXXX'\n")
	for i, want := range []string{"COLD", "WARM gone=yes 1234:2345", "WARM gone=no 1234:2345"} {
		writeFile(t, filepath.Join(ctxDir, "greeting"), fmt.Sprintf("runner %d\n", i))
		for _, f := range []string{"Dockerfile", "greeting"} {
			must(t, os.Chown(filepath.Join(ctxDir, f), uid, gid))
		}
		out := dir(fmt.Sprintf("out%d", i))
		args := []string{"build", "--root", dir(fmt.Sprintf("root%d", i)), "--progress=plain", "--network=none",
			"-o", "type=local,dest=" + filepath.Join(out, "rootfs"), "--cache-to", "type=local,dest=" + cacheDir + ",mounts=true"}
		if i > 0 {
			args = append(args, "--cache-from", "type=local,src="+cacheDir)
		}
		cmd := exec.Command(bin, append(args, ctxDir)...)
		cmd.Dir = home
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "USER=" + name, "KILN_SYNC=wait"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		log, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("rootless runner %d: %v\n%s", i, err, log)
		}
		b, err := os.ReadFile(filepath.Join(out, "rootfs", "result"))
		if got := strings.TrimSpace(string(b)); err != nil || got != want {
			t.Fatalf("rootless runner %d: /result %q (%v), want %q\n%s", i, got, err, want, log)
		}
	}
}

// TestCacheMountsFlagUsage: mounts= takes true or false, and not with
// inline cache.
func TestCacheMountsFlagUsage(t *testing.T) {
	ctxDir := registryContext(t, "FROM scratch\n")
	for _, tc := range []struct{ spec, want string }{
		{"type=registry,ref=x,mounts=yes", "mounts=yes"},
		{"type=inline,mounts=true", "inline cache cannot carry cache mounts"},
	} {
		out, code := kiln(t, "build", "--root", t.TempDir(), "--cache-to", tc.spec, ctxDir)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want 2 and %q:\n%s", tc.spec, code, tc.want, out)
		}
	}
	out, code := kiln(t, "build", "--root", t.TempDir(), "--cache-to", "type=local,dest="+filepath.Join(t.TempDir(), "c")+",mounts=false", ctxDir)
	if code != 0 {
		t.Errorf("mounts=false: exit %d:\n%s", code, out)
	}
}
