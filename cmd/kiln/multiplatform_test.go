package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/emulate"
	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/progress"
)

// needEmulation skips (SkipHost) unless RUN steps for p can execute here.
func needEmulation(t *testing.T, p string) {
	t.Helper()
	if err := emulate.Check(p); err != nil {
		testutil.SkipHost(t, err)
	}
}

// stepEvents returns the rawjson step events of a build's output.
func stepEvents(t *testing.T, out string) []progress.Event {
	t.Helper()
	var steps []progress.Event
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var e progress.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("rawjson line %q: %v", l, err)
		}
		if e.Type == "step" {
			steps = append(steps, e)
		}
	}
	return steps
}

// fileOf reads a regular file of an image's flattened filesystem.
func fileOf(t *testing.T, img v1.Image, path string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("no %s in the image", path)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(hdr.Name, "./") == strings.TrimPrefix(path, "/") {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

func platformContext(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	writeContext(t, dir, dockerfile, nil)
	return dir
}

// TestMultiPlatformPush pushes a two-platform image whose RUN ran natively
// for one and under QEMU for the other: one index, each manifest with its
// platform, and uname -m telling them apart.
func TestMultiPlatformPush(t *testing.T) {
	needRoot(t)
	needEmulation(t, "linux/arm64")
	reg := registryWithBases(t)
	base := testutil.PushBusyboxMulti(t, reg)
	ctxDir := platformContext(t, "FROM "+base+`
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT
RUN uname -m > /uname.txt && echo "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH|$BUILDVARIANT" > /args.txt
`)
	ref := reg + "/test/multi:1"
	meta := filepath.Join(t.TempDir(), "meta.json")
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=rawjson", "--platform", "linux/amd64,linux/arm64",
		"-t", ref, "--push", "--metadata-file", meta, ctxDir)
	if code != 0 {
		t.Fatalf("kiln build exited %d:\n%s", code, out)
	}
	emulated := map[string]string{}
	for _, e := range stepEvents(t, out) {
		if strings.Contains(e.Name, "RUN uname") {
			emulated[strings.Fields(e.Name)[0]] = e.Emulated
		}
	}
	if want := map[string]string{"[linux/amd64": "", "[linux/arm64": "linux/arm64"}; fmt.Sprint(emulated) != fmt.Sprint(want) {
		t.Errorf("RUN steps by platform prefix and emulated field: %v, want %v\n%s", emulated, want, out)
	}

	n, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(n)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	mb, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := idx.Digest(); !strings.Contains(string(mb), d.String()) {
		t.Errorf("--metadata-file does not name the index %s:\n%s", d, mb)
	}
	want := map[string][2]string{
		"linux/amd64": {"x86_64", "linux/amd64|linux|amd64||linux/amd64|linux|amd64|"},
		"linux/arm64": {"aarch64", "linux/arm64|linux|arm64||linux/amd64|linux|amd64|"},
	}
	seen, attestations := 0, 0
	provenances := map[string]string{} // by the digest of their image
	imagePlatform := map[string]string{}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		if p == "unknown/unknown" {
			attestations++
			// Each platform's provenance names its own image and bases.
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			ls, err := img.Layers()
			if err != nil || len(ls) != 1 {
				t.Fatalf("attestation layers: %d, %v", len(ls), err)
			}
			rc, err := ls[0].Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			st, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			ofImage := d.Annotations["vnd.docker.reference.digest"]
			provenances[ofImage] = string(st)
			continue
		}
		w, ok := want[p]
		if !ok {
			t.Errorf("unexpected platform %s in the index", p)
			continue
		}
		seen++
		imagePlatform[d.Digest.String()] = p
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		// (The attestation manifests are BuildKit's, which go-containerregistry's validate does not know.)
		if err := validate.Image(img); err != nil {
			t.Errorf("%s image does not validate: %v", p, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := cf.OS + "/" + cf.Architecture; got != p {
			t.Errorf("%s image config says %s", p, got)
		}
		if got := strings.TrimSpace(fileOf(t, img, "/uname.txt")); got != w[0] {
			t.Errorf("%s: uname -m = %q, want %q", p, got, w[0])
		}
		if got := strings.TrimSpace(fileOf(t, img, "/args.txt")); got != w[1] {
			t.Errorf("%s: TARGET*|BUILD* = %q, want %q", p, got, w[1])
		}
	}
	if seen != 2 {
		t.Errorf("%d platform images in the index, want 2", seen)
	}
	if attestations != 2 {
		t.Errorf("%d attestation manifests, want one per platform (2)", attestations)
	}
	for dg, p := range imagePlatform {
		st := provenances[dg]
		want := "platform=" + strings.ReplaceAll(p, "/", "%2F")
		if !strings.Contains(st, dg[len("sha256:"):]) || strings.Count(st, want) < 2 {
			t.Errorf("the provenance of the %s image does not name it and its base for %s:\n%s", p, p, st)
		}
	}
}

// TestCrossCompileIdiom builds the cross-compile idiom (a stage FROM
// --platform=$BUILDPLATFORM copied into each target's stage): nothing
// runs emulated, and the outputs are one directory per platform (local,
// and inside the tar) and one index (oci).
func TestCrossCompileIdiom(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base := testutil.PushBusyboxMulti(t, reg)
	ctxDir := platformContext(t, "FROM --platform=$BUILDPLATFORM "+base+` AS build
ARG TARGETARCH TARGETPLATFORM
RUN echo "built for $TARGETARCH on $(uname -m)" > /out.txt
FROM `+base+`
COPY --from=build /out.txt /
`)
	dir := t.TempDir()
	local, ociTar, rootTar := filepath.Join(dir, "local"), filepath.Join(dir, "oci.tar"), filepath.Join(dir, "rootfs.tar")
	ociDir := filepath.Join(dir, "layout")
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=rawjson", "--platform", "linux/amd64,linux/arm64",
		"-o", "type=local,dest="+local, "-o", "type=oci,dest="+ociTar, "-o", "type=oci,tar=false,dest="+ociDir, "-o", "type=tar,dest="+rootTar, ctxDir)
	if code != 0 {
		t.Fatalf("kiln build exited %d:\n%s", code, out)
	}
	runs := 0
	for _, e := range stepEvents(t, out) {
		if e.Emulated != "" {
			t.Errorf("step %q ran emulated (%s)", e.Name, e.Emulated)
		}
		if strings.Contains(e.Name, "RUN echo") {
			runs++
			if !strings.HasPrefix(e.Name, "[linux/amd64") {
				t.Errorf("build stage step %q is not named for linux/amd64", e.Name)
			}
		}
	}
	if runs == 0 {
		t.Errorf("no RUN step in the progress:\n%s", out)
	}
	for dirName, want := range map[string]struct{ out, machine string }{
		"linux_amd64": {"built for amd64 on x86_64", "\x3e"},
		"linux_arm64": {"built for arm64 on x86_64", "\xb7"},
	} {
		b, err := os.ReadFile(filepath.Join(local, dirName, "out.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want.out {
			t.Errorf("%s/out.txt = %q, want %q", dirName, got, want.out)
		}
		elf, err := os.ReadFile(filepath.Join(local, dirName, "bin", "busybox"))
		if err != nil {
			t.Fatal(err)
		}
		if len(elf) < 20 || string(elf[18:19]) != want.machine {
			t.Errorf("%s/bin/busybox is not the platform's binary", dirName)
		}
	}
	// The tar holds the same trees under the same directories.
	f, err := os.Open(rootTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[hdr.Name] = true
	}
	for _, n := range []string{"linux_amd64/out.txt", "linux_arm64/out.txt", "linux_arm64/bin/busybox"} {
		if !names[n] {
			t.Errorf("type=tar output has no %s", n)
		}
	}
	// Both OCI outputs: one index with both platforms.
	lp, err := layout.FromPath(ociDir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil || len(tm.Manifests) != 1 {
		t.Fatalf("OCI layout index.json: %v, %v", tm, err)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Errorf("index does not validate: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, d := range im.Manifests {
		plats = append(plats, d.Platform.String())
	}
	if got := strings.Join(plats, " "); got != "linux/amd64 linux/arm64" {
		t.Errorf("index platforms: %s, want linux/amd64 linux/arm64", got)
	}
	if st, err := os.Stat(ociTar); err != nil || st.Size() == 0 {
		t.Errorf("no OCI archive: %v", err)
	}
}

// TestMultiPlatformRefusals: what cannot be done is refused before any
// work, naming the flag or the Dockerfile line and what to do.
func TestMultiPlatformRefusals(t *testing.T) {
	noHandler := ""
	for _, p := range []string{"linux/s390x", "linux/mips64", "linux/ppc64le", "linux/riscv64", "linux/sparc64"} {
		if emulate.Check(p) != nil {
			noHandler = p
			break
		}
	}
	for _, tt := range []struct {
		name, dockerfile string
		args             []string
		code             int
		want             []string
	}{
		{"docker output", "FROM scratch\nCOPY Dockerfile /\n",
			[]string{"--platform", "linux/amd64,linux/arm64", "-o", "type=docker,dest=" + filepath.Join(t.TempDir(), "x.tar")},
			2, []string{"type=docker", "--platform linux/amd64,linux/arm64", "build one with --platform"}},
		{"bad platform", "FROM scratch\n", []string{"--platform", "linux/amd64,not/a/real/platform"},
			2, []string{"--platform", "os/arch[/variant]"}},
		{"no handler", "FROM scratch\nCOPY Dockerfile /\nRUN true\nRUN false\n",
			[]string{"--platform", noHandler},
			1, []string{"Dockerfile:3", "RUN for " + noHandler, "kiln binfmt --install"}},
		// With several platforms, none starts: not even the native one.
		{"no handler among several", "FROM scratch\nCOPY Dockerfile /\nRUN true\n",
			[]string{"--platform", "linux/amd64," + noHandler, "-o", "type=oci,dest=" + filepath.Join(t.TempDir(), "x.tar")},
			1, []string{"Dockerfile:3", "RUN for " + noHandler, "kiln binfmt --install"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.name, "no handler") && noHandler == "" {
				t.Skip("every candidate platform has a handler here") // sparc64 never does: not reached
			}
			ctxDir := platformContext(t, tt.dockerfile)
			out, code := kiln(t, append(append([]string{"build", "--root", t.TempDir(), "--progress=plain"}, tt.args...), ctxDir)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.code, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "#1 ") {
				t.Errorf("a step started before the refusal:\n%s", out)
			}
		})
	}
}

// TestMultiPlatformCache exports the cache of a two-platform build and
// builds again from it in an empty store: every step is a hit, whether
// the cache is a local directory or inline in the pushed index.
func TestMultiPlatformCache(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base := testutil.PushBusyboxMulti(t, reg)
	ctxDir := platformContext(t, "FROM --platform=$BUILDPLATFORM "+base+` AS build
ARG TARGETARCH
RUN echo "for $TARGETARCH" > /out.txt
FROM `+base+`
COPY --from=build /out.txt /
`)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	image := reg + "/test/inline:1"
	for _, tt := range []struct {
		name          string
		first, second []string
		hits          []string // the steps that must be hits, by instruction
		want          int
	}{
		{"local", []string{"--cache-to", "type=local,dest=" + cacheDir + ",mode=max"}, []string{"--cache-from", "type=local,src=" + cacheDir},
			[]string{"RUN ", "COPY "}, 4},
		// Inline cache is mode=min: the target stage's steps only.
		{"inline", []string{"--cache-to", "type=inline", "-t", image, "--push"}, []string{"--cache-from", "type=registry,ref=" + image},
			[]string{"COPY "}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			build := func(extra []string) string {
				args := []string{"build", "--root", t.TempDir(), "--progress=rawjson", "--platform", "linux/amd64,linux/arm64",
					"-o", "type=oci,dest=" + filepath.Join(t.TempDir(), "x.tar")}
				out, code := kiln(t, append(append(args, extra...), ctxDir)...)
				if code != 0 {
					t.Fatalf("kiln build %v exited %d:\n%s", extra, code, out)
				}
				return out
			}
			build(tt.first)
			out := build(tt.second)
			steps := map[int]string{}
			cached := map[int]bool{}
			for _, l := range strings.Split(out, "\n") {
				var e progress.Event
				if json.Unmarshal([]byte(l), &e) != nil {
					continue
				}
				switch e.Type {
				case "step":
					steps[e.Step] = e.Name
				case "cached":
					cached[e.Step] = true
				}
			}
			n := 0
			for i, name := range steps {
				for _, h := range tt.hits {
					if strings.Contains(name, h) {
						n++
						if !cached[i] {
							t.Errorf("step %q ran again", name)
						}
					}
				}
			}
			if n != tt.want {
				t.Errorf("%d %v steps in the progress, want %d (one per platform):\n%s", n, tt.hits, tt.want, out)
			}
		})
	}
}

// TestArmV7TakesV6 builds --platform linux/arm/v7 on an index whose only
// 32-bit ARM image is linux/arm/v6: containerd's matching takes it, and
// its RUN runs under QEMU with TARGETVARIANT v7.
func TestArmV7TakesV6(t *testing.T) {
	needRoot(t)
	needEmulation(t, "linux/arm/v7")
	reg := registryWithBases(t)
	armhf := testutil.BusyboxFor(t, "armhf")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: testutil.BusyboxImage(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: armhf, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}}},
	)
	ref := reg + "/library/busybox:armv6"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	ctxDir := platformContext(t, "FROM "+ref+"\nARG TARGETARCH TARGETVARIANT\nRUN echo \"$TARGETARCH $TARGETVARIANT $(uname -m)\" > /arch.txt\n")
	out := filepath.Join(t.TempDir(), "img.tar")
	log, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--platform", "linux/arm/v7", "-o", "type=docker,dest="+out, ctxDir)
	if code != 0 {
		t.Fatalf("kiln build exited %d:\n%s", code, log)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.OS + "/" + cf.Architecture + "/" + cf.Variant; got != "linux/arm/v7" {
		t.Errorf("image config platform %s, want linux/arm/v7", got)
	}
	if got := strings.TrimSpace(fileOf(t, img, "/arch.txt")); !strings.HasPrefix(got, "arm v7 armv7") {
		t.Errorf("/arch.txt = %q, want arm v7 armv7…", got)
	}
}
