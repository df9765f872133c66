package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/registry"
	"github.com/kiln-build/kiln/registry/registrytest"
	"github.com/kiln-build/kiln/remotecache"
)

// cacheRegistry starts the real registry behind a recording proxy (that
// injects no fault) with busybox pushed into it; it returns the proxy and
// the base image's name there.
func cacheRegistry(t *testing.T) (*registrytest.Distribution, *registrytest.FaultProxy, string) {
	t.Helper()
	registryEnv(t)
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{})
	proxy := registrytest.NewFaultProxy(t, "http://"+reg.Host, 0, 0, 1)
	busybox := fetchRemote(t, registryWithBases(t)+"/library/busybox:latest")
	base := proxy.Host + "/library/busybox:latest"
	if _, err := (&registry.Resolver{}).Push(context.Background(), busybox, []string{base}); err != nil {
		t.Fatal(err)
	}
	return reg, proxy, base
}

var stepLineRE = regexp.MustCompile(`(?m)^#(\d+) (\[[^\]]*\] )?((?:RUN|COPY|ADD|WORKDIR) .*)$`)

// stepStates maps each file-changing step of plain progress output to
// "CACHED" or "DONE".
func stepStates(out string) map[string]string {
	states := map[string]string{}
	for _, m := range stepLineRE.FindAllStringSubmatch(out, -1) {
		n, text := m[1], m[3]
		switch {
		case strings.Contains(out, "\n#"+n+" CACHED"):
			states[text] = "CACHED"
		case strings.Contains(out, "\n#"+n+" DONE"):
			states[text] = "DONE"
		default:
			states[text] = "?"
		}
	}
	return states
}

func allCached(t *testing.T, out string) {
	t.Helper()
	st := stepStates(out)
	if len(st) == 0 {
		t.Fatalf("no step found in the output:\n%s", out)
	}
	for s, v := range st {
		if v != "CACHED" {
			t.Errorf("step %q is %s, want CACHED", s, v)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// layerGETs counts the GETs of the given blobs among requests.
func layerGETs(reqs []registrytest.Request, layers map[string]bool) int {
	n := 0
	for _, r := range reqs {
		i := strings.Index(r.Path, "/blobs/")
		if r.Method == "GET" && i >= 0 && layers[r.Path[i+len("/blobs/"):]] {
			n++
		}
	}
	return n
}

func imageLayers(t *testing.T, ref string) map[string]bool {
	t.Helper()
	m, err := fetchRemote(t, ref).Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range m.Layers {
		out[l.Digest.String()] = true
	}
	return out
}

func headDigest(t *testing.T, ref string) v1.Hash {
	t.Helper()
	n, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(n, (&registry.Resolver{}).Options(context.Background())...)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest
}

// imageDigest is the manifest digest of the linux/amd64 image ref names,
// looking into an index.
func imageDigest(t *testing.T, ref string) v1.Hash {
	t.Helper()
	n, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(n, (&registry.Resolver{}).Options(context.Background())...)
	if err != nil {
		t.Fatalf("fetching %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRemoteCacheRoundTrip: runner A builds, pushes and exports its cache;
// runner B, on an empty root, imports it, runs no step, downloads no layer
// (its push to the same registry mounts them), pushes the very same image,
// and its export of the unchanged records writes no manifest.
func TestRemoteCacheRoundTrip(t *testing.T) {
	needRoot(t)
	_, proxy, base := cacheRegistry(t)
	cacheRef := proxy.Host + "/team/cache:main"
	ctxDir := registryContext(t, "FROM "+base+"\nRUN echo built > /built\nCOPY greeting /greeting\nRUN true\n")

	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", proxy.Host+"/team/app:a", "--push",
		"--cache-to", "type=registry,ref="+cacheRef, ctxDir)
	if code != 0 || !strings.Contains(out, "cache exported to type=registry,ref="+cacheRef) {
		t.Fatalf("runner A exited %d:\n%s", code, out)
	}
	first := headDigest(t, cacheRef)
	layers := imageLayers(t, proxy.Host+"/team/app:a")
	// The cache's layers are the image's: mounted, never uploaded again.
	mounts := 0
	for _, r := range proxy.Requests() {
		if r.Method == "POST" && strings.Contains(r.Path, "/team/cache/blobs/uploads") && strings.Contains(r.Query, "mount=") {
			mounts++
		}
	}
	if want := len(imageLayers(t, cacheRef)); mounts != want {
		t.Errorf("runner A's cache export mounted %d blobs, want its %d layers", mounts, want)
	}

	before := len(proxy.Requests())
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", proxy.Host+"/team/app:b", "--push",
		"--cache-from", "type=registry,ref="+cacheRef, "--cache-to", "type=registry,ref="+cacheRef, ctxDir)
	if code != 0 {
		t.Fatalf("runner B exited %d:\n%s", code, out)
	}
	t.Logf("runner B:\n%s", out)
	allCached(t, out)
	reqs := proxy.Requests()[before:]
	if n := layerGETs(reqs, layers); n != 0 {
		t.Errorf("runner B downloaded %d layer blobs, want none", n)
	}
	if !strings.Contains(out, "unchanged") {
		t.Errorf("runner B's export of the same records was not reported unchanged:\n%s", out)
	}
	for _, r := range reqs {
		if r.Method == "PUT" && strings.Contains(r.Path, "/team/cache/manifests/") {
			t.Errorf("runner B wrote the cache manifest again: %s %s", r.Method, r.Path)
		}
	}
	if got := headDigest(t, cacheRef); got != first {
		t.Errorf("the cache digest moved from %s to %s", first, got)
	}
	// (The pushed index differs: its provenance has each build's times.)
	if a, b := imageDigest(t, proxy.Host+"/team/app:a"), imageDigest(t, proxy.Host+"/team/app:b"); a != b {
		t.Errorf("runner B pushed %s, runner A %s: a fully cached build must give the same image", b, a)
	}
}

// TestRemoteCacheModes: mode=min exports the target's chain only, so a
// runner importing it runs the builder stage again; mode=max has it all.
func TestRemoteCacheModes(t *testing.T) {
	needRoot(t)
	_, proxy, base := cacheRegistry(t)
	df := "FROM " + base + " AS builder\nRUN echo b > /b\nFROM " + base + "\nCOPY --from=builder /b /b\nRUN cat /b > /f\n"
	ctxDir := registryContext(t, df)
	minRef, maxRef := proxy.Host+"/team/cache:min", proxy.Host+"/team/cache:max"
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain",
		"--cache-to", "type=registry,ref="+minRef, "--cache-to", "type=registry,ref="+maxRef+",mode=max", ctxDir)
	if code != 0 {
		t.Fatalf("runner A exited %d:\n%s", code, out)
	}
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-from", "type=registry,ref="+maxRef, ctxDir)
	if code != 0 {
		t.Fatalf("runner with mode=max exited %d:\n%s", code, out)
	}
	allCached(t, out)

	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-from", "type=registry,ref="+minRef, "-o", "type=local,dest="+filepath.Join(t.TempDir(), "rootfs"), ctxDir)
	if code != 0 {
		t.Fatalf("runner with mode=min exited %d:\n%s", code, out)
	}
	st := stepStates(out)
	want := map[string]string{"RUN echo b > /b": "DONE", "COPY --from=builder /b /b": "CACHED", "RUN cat /b > /f": "CACHED"}
	for s, v := range want {
		if st[s] != v {
			t.Errorf("mode=min: step %q is %q, want %s (all: %v)", s, st[s], v, st)
		}
	}
}

// TestLocalCacheRoundTrip: a cache directory written by one root serves
// another; writing it again unchanged keeps index.json.
func TestLocalCacheRoundTrip(t *testing.T) {
	needRoot(t)
	_, _, base := cacheRegistry(t)
	ctxDir := registryContext(t, "FROM "+base+"\nRUN echo built > /built\nCOPY greeting /greeting\n")
	dir := filepath.Join(t.TempDir(), "cache")
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-to", "type=local,dest="+dir, ctxDir)
	if code != 0 || !strings.Contains(out, "cache exported to type=local") {
		t.Fatalf("export exited %d:\n%s", code, out)
	}
	idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-from", "type=local,src="+dir,
		"--cache-to", "type=local,dest="+dir, "-o", "type=local,dest="+rootfs, ctxDir)
	if code != 0 {
		t.Fatalf("import exited %d:\n%s", code, out)
	}
	allCached(t, out)
	if b, err := os.ReadFile(filepath.Join(rootfs, "built")); err != nil || string(b) != "built\n" {
		t.Errorf("the exported rootfs lacks the cached RUN's file: %q, %v", b, err)
	}
	if !strings.Contains(out, "unchanged") {
		t.Errorf("the second export was not unchanged:\n%s", out)
	}
	idx2, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if string(idx) != string(idx2) {
		t.Errorf("index.json changed:\n%s\n%s", idx, idx2)
	}

	// Damaged records: a warning, and the build runs cold.
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
	recs := filepath.Join(dir, "blobs", "sha256", m.Config.Digest.Hex)
	data, _ := os.ReadFile(recs)
	if err := os.WriteFile(recs, []byte(strings.Replace(string(data), "sha256:", "sha256:0", 1)[:len(data)]), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-from", "type=local,src="+dir, ctxDir)
	if code != 0 || !strings.Contains(out, "warning: cache source type=local") {
		t.Fatalf("a damaged cache: exit %d, want 0 and a warning:\n%s", code, out)
	}
	for s, v := range stepStates(out) {
		if v != "DONE" {
			t.Errorf("with a damaged cache, step %q is %s, want DONE", s, v)
		}
	}
}

// TestInlineCache: an image pushed with --cache-to type=inline is a cache
// source.
func TestInlineCache(t *testing.T) {
	needRoot(t)
	_, proxy, base := cacheRegistry(t)
	ctxDir := registryContext(t, "FROM "+base+"\nRUN echo built > /built\nCOPY greeting /greeting\n")
	app := proxy.Host + "/team/app:inline"
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", app, "--push", "--cache-to", "type=inline", ctxDir)
	if code != 0 {
		t.Fatalf("build exited %d:\n%s", code, out)
	}
	cfg, err := fetchRemote(t, app).RawConfigFile()
	if err != nil || !strings.Contains(string(cfg), `"`+remotecache.InlineKey+`":{"records":[`) {
		t.Fatalf("the config carries no inline cache (%v):\n%s", err, cfg)
	}
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-from", "type=registry,ref="+app, ctxDir)
	if code != 0 {
		t.Fatalf("build from inline cache exited %d:\n%s", code, out)
	}
	allCached(t, out)
}

// TestCacheSourceFailures: a cache source that cannot be used is a
// warning, and the build goes on cold.
func TestCacheSourceFailures(t *testing.T) {
	needRoot(t)
	_, proxy, base := cacheRegistry(t)
	authed := registrytest.StartDistribution(t, registrytest.DistributionOptions{User: "ci", Password: "s3cret"})
	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, "index.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctxDir := registryContext(t, "FROM "+base+"\nRUN echo built > /built\n")
	for _, tc := range []struct{ name, from, want string }{
		{"missing", "type=registry,ref=" + proxy.Host + "/team/cache:nothing", "not used"},
		{"unreachable", "type=registry,ref=127.0.0.1:1/team/cache:x", "not used"},
		{"unauthorized", "type=registry,ref=" + authed.Host + "/team/cache:x", "kiln login " + authed.Host},
		{"another format", "type=registry,ref=" + base, "carries no kiln cache"},
		{"corrupt local", "type=local,src=" + corrupt, "not used"},
		{"missing local", "type=local,src=" + filepath.Join(corrupt, "nope"), "not used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-from", tc.from, ctxDir)
			if code != 0 {
				t.Fatalf("build exited %d:\n%s", code, out)
			}
			if !strings.Contains(out, "warning: cache source") || !strings.Contains(out, tc.want) {
				t.Errorf("no warning saying %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestCacheExportThroughFaults exports a new cache through a proxy that
// resets or refuses 30% of the requests: the image push succeeds, and the
// cache ref names the old cache or the new one, whole.
func TestCacheExportThroughFaults(t *testing.T) {
	needRoot(t)
	reg, _, base := cacheRegistry(t)
	faulty := registrytest.NewFaultProxy(t, "http://"+reg.Host, 0.3, 2, 7)
	cacheRef := "/team/cache:main"
	ctxDir := registryContext(t, "FROM "+base+"\nRUN echo one > /one\n")
	if out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--cache-to", "type=registry,ref="+reg.Host+cacheRef, ctxDir); code != 0 {
		t.Fatalf("first export exited %d:\n%s", code, out)
	}
	old := headDigest(t, reg.Host+cacheRef)

	ctxDir = registryContext(t, "FROM "+base+"\nRUN echo one > /one\nRUN head -c 300000 /dev/urandom > /noise\nCOPY greeting /greeting\n")
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", faulty.Host+"/team/app:1", "--push",
		"--cache-from", "type=registry,ref="+faulty.Host+cacheRef, "--cache-to", "type=registry,ref="+faulty.Host+cacheRef+",mode=max", ctxDir)
	if code != 0 {
		t.Fatalf("build through faults exited %d:\n%s", code, out)
	}
	if resets, unavailable, _ := faulty.Counts(); resets+unavailable == 0 {
		t.Fatal("no fault was injected")
	}
	now := headDigest(t, reg.Host+cacheRef)
	m := regexp.MustCompile(`cache exported to \S+: (sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	switch {
	case now == old:
	case m != nil && now.String() == m[1]:
	default:
		t.Fatalf("the cache ref names %s: neither the old cache %s nor the one exported:\n%s", now, old, out)
	}
	// Whole: every blob the cache names is there.
	n, _ := name.ParseReference(reg.Host + cacheRef)
	img, err := remote.Image(n, (&registry.Resolver{}).Options(context.Background())...)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		d, _ := l.Digest()
		if _, err := remote.Layer(n.Context().Digest(d.String()), (&registry.Resolver{}).Options(context.Background())...); err != nil {
			t.Errorf("cache blob %s: %v", d, err)
		}
	}
	if _, err := img.RawConfigFile(); err != nil {
		t.Errorf("cache records: %v", err)
	}
}

// TestCacheFlagUsage: malformed --cache-to/--cache-from are usage errors
// naming what is wrong.
func TestCacheFlagUsage(t *testing.T) {
	ctxDir := registryContext(t, "FROM scratch\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cache-to", "type=registry,ref=x,colour=blue"}, `unknown key "colour"`},
		{[]string{"--cache-to", "type=registry"}, "needs ref="},
		{[]string{"--cache-to", "type=local"}, "needs dest="},
		{[]string{"--cache-to", "type=registry,ref=x,mode=all"}, "mode=all"},
		{[]string{"--cache-to", "type=s3,ref=x"}, "type=s3"},
		{[]string{"--cache-from", "type=local"}, "needs src="},
		{[]string{"--cache-from", "type=registry,ref=x,mode=max"}, `unknown key "mode"`},
	} {
		out, code := kiln(t, append(append([]string{"build", "--root", t.TempDir()}, tc.args...), ctxDir)...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q:\n%s", tc.args, code, tc.want, out)
		}
	}
	// compression= and oci-mediatypes= are accepted, as buildx spells them
	out, code := kiln(t, "build", "--root", t.TempDir(), "--cache-to", "type=local,dest="+filepath.Join(t.TempDir(), "c")+",compression=gzip,oci-mediatypes=true", ctxDir)
	if code != 0 {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// TestRemoteCacheMeasure prints what two runners move on a small workload
// (KILN_MEASURE=1; it asserts nothing about time): runner A cold, runner B
// through the cache, runner C cold with no cache, each pushing.
func TestRemoteCacheMeasure(t *testing.T) {
	if os.Getenv("KILN_MEASURE") == "" {
		t.Skip("a measurement: set KILN_MEASURE=1")
	}
	needRoot(t)
	_, proxy, base := cacheRegistry(t)
	cacheRef := proxy.Host + "/team/cache:main"
	ctxDir := registryContext(t, "FROM "+base+"\nRUN head -c 4000000 /dev/urandom > /noise && sleep 1\nCOPY greeting /greeting\nRUN for i in $(seq 1 200); do echo $i > /f$i; done\n")
	sizes := map[string]int64{}
	for _, run := range []struct {
		name, tag string
		cache     []string
	}{
		{"A (cold, exports)", "a", []string{"--cache-to", "type=registry,ref=" + cacheRef}},
		{"B (imports)", "b", []string{"--cache-from", "type=registry,ref=" + cacheRef, "--cache-to", "type=registry,ref=" + cacheRef}},
		{"C (cold, no cache)", "c", nil},
	} {
		before := len(proxy.Requests())
		start := time.Now()
		args := append([]string{"build", "--root", t.TempDir(), "--progress=plain", "-t", proxy.Host + "/team/app:" + run.tag, "--push"}, run.cache...)
		out, code := kiln(t, append(args, ctxDir)...)
		el := time.Since(start)
		if code != 0 {
			t.Fatalf("%s exited %d:\n%s", run.name, code, out)
		}
		if len(sizes) == 0 {
			for _, ref := range []string{base, proxy.Host + "/team/app:a"} {
				m, _ := fetchRemote(t, ref).Manifest()
				for _, l := range m.Layers {
					sizes[l.Digest.String()] = l.Size
				}
			}
		}
		var gets, down, puts int64
		for _, r := range proxy.Requests()[before:] {
			if i := strings.Index(r.Path, "/blobs/"); i >= 0 {
				if sz, ok := sizes[r.Path[i+len("/blobs/"):]]; ok && r.Method == "GET" {
					gets++
					down += sz
				}
			}
			if r.Method == "PUT" || r.Method == "PATCH" {
				puts++
			}
		}
		t.Logf("runner %s: %v, %d layer GETs, %d layer bytes downloaded, %d PUT/PATCH requests, %d requests in all; steps: %v",
			run.name, el.Round(time.Millisecond), gets, down, puts, len(proxy.Requests())-before, stepStates(out))
	}
}
