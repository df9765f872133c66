package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/registry"
	"github.com/kiln-build/kiln/registry/registrytest"
)

// kilnWithStdin runs the binary with stdin; it returns stdout+stderr and the
// exit code.
func kilnWithStdin(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(kilnBin, args...)
	var out bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running kiln: %v", err)
	}
	return out.String(), 0
}

// registryEnv gives kiln (and this process's keychain) a fresh Docker
// config, certs.d and kiln.toml, so no test reads or writes the machine's.
// It returns the certs.d directory.
func registryEnv(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker"))
	t.Setenv("DOCKER_AUTH_CONFIG", "")
	t.Setenv("KILN_CERTS_DIR", filepath.Join(dir, "certs.d"))
	t.Setenv("KILN_CONFIG", filepath.Join(dir, "kiln.toml"))
	if err := os.WriteFile(filepath.Join(dir, "kiln.toml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "certs.d")
}

// registryContext writes a build context whose Dockerfile is df.
func registryContext(t *testing.T, df string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"Dockerfile": df, "greeting": "hello from kiln\n"}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var pushedRE = regexp.MustCompile(`pushed (\S+)@(sha256:[0-9a-f]{64})`)

// fetchRemote fetches ref as a pull would, with the test's certs.d and
// Docker config.
func fetchRemote(t *testing.T, ref string) v1.Image {
	t.Helper()
	r := &registry.Resolver{}
	n, err := r.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(n, r.Options(context.Background())...)
	if err != nil {
		t.Fatalf("fetching %s: %v", ref, err)
	}
	return img
}

// TestPushRoundTrip is issue 4's done-when: build and push to a TLS
// registry with htpasswd authentication (the real distribution registry),
// validate what landed as `crane validate --remote` does, build FROM it on
// a fresh store, and pull it by digest.
func TestPushRoundTrip(t *testing.T) {
	needRoot(t)
	certs := registryEnv(t)
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{TLS: true, User: "ci", Password: "s3cret"})
	reg.CA.InstallCertsDir(t, certs, reg.Host)
	base := registryWithBases(t)

	out, code := kilnWithStdin(t, "nope\n", "login", reg.Host, "-u", "ci", "--password-stdin")
	if code != 1 || !strings.Contains(out, "authentication to registry "+reg.Host+" failed") {
		t.Fatalf("login with a wrong password exited %d:\n%s", code, out)
	}
	if strings.Contains(out, "nope") {
		t.Errorf("the password was printed:\n%s", out)
	}
	out, code = kilnWithStdin(t, "s3cret\n", "login", reg.Host, "-u", "ci", "--password-stdin")
	if code != 0 || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("login exited %d:\n%s", code, out)
	}

	app := reg.Host + "/team/app"
	ctxDir := registryContext(t, "FROM "+base+"/library/busybox:latest\nRUN echo built > /built\nCOPY greeting /greeting\n")
	md := filepath.Join(t.TempDir(), "metadata.json")
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", app+":1", "-t", app+":latest",
		"--push", "--metadata-file", md, ctxDir)
	if code != 0 {
		t.Fatalf("build --push exited %d:\n%s", code, out)
	}
	m := pushedRE.FindAllStringSubmatch(out, -1)
	if len(m) != 2 || m[0][1] != app+":1" || m[1][1] != app+":latest" || m[0][2] != m[1][2] {
		t.Fatalf("want one pushed line per -t with the same digest:\n%s", out)
	}
	digest := m[0][2]

	var meta map[string]any
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if meta["containerimage.digest"] != digest || meta["image.name"] != app+":1,"+app+":latest" {
		t.Errorf("metadata file:\n%s", b)
	}

	img := fetchRemote(t, app+"@"+digest)
	if err := validate.Image(img); err != nil {
		t.Fatalf("the pushed image does not validate: %v", err)
	}
	if cfg, _ := img.ConfigName(); meta["containerimage.config.digest"] != cfg.String() {
		t.Errorf("metadata config digest %v, registry has %s", meta["containerimage.config.digest"], cfg)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("pushed media type %s, want OCI", mt)
	}

	for _, from := range []string{app + ":1", app + "@" + digest} {
		t.Run("FROM "+from, func(t *testing.T) {
			ctxDir := registryContext(t, "FROM "+from+"\nRUN cat /built /greeting > /both\n")
			oci := filepath.Join(t.TempDir(), "out.tar")
			out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-o", "type=oci,dest="+oci, ctxDir)
			if code != 0 {
				t.Fatalf("build FROM the pushed image exited %d:\n%s", code, out)
			}
		})
	}

	out, code = kiln(t, "logout", reg.Host)
	if code != 0 || !strings.Contains(out, "Removing login credentials for "+reg.Host) {
		t.Fatalf("logout exited %d:\n%s", code, out)
	}
	out, code = kiln(t, "build", "--root", t.TempDir(), "--progress=plain", registryContext(t, "FROM "+app+":1\n"))
	if code != 1 || !strings.Contains(out, "authentication to registry "+reg.Host+" failed") || !strings.Contains(out, "kiln login "+reg.Host) {
		t.Errorf("build FROM a private image after logout exited %d:\n%s", code, out)
	}
}

// TestMirror builds FROM busybox with Docker Hub out of reach: the mirror
// of kiln.toml, or of --registry-mirror, is the only route.
func TestMirror(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	mirror := registryWithBases(t)
	ctxDir := registryContext(t, "FROM busybox\nRUN echo mirrored > /m\n")

	if err := os.WriteFile(os.Getenv("KILN_CONFIG"), []byte("[registry.\"docker.io\"]\n  mirrors = [\""+mirror+"\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", ctxDir); code != 0 {
		t.Fatalf("FROM busybox through kiln.toml's mirror exited %d:\n%s", code, out)
	}

	if err := os.WriteFile(os.Getenv("KILN_CONFIG"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--registry-mirror", "docker.io="+mirror, ctxDir); code != 0 {
		t.Fatalf("FROM busybox through --registry-mirror exited %d:\n%s", code, out)
	}
}

// TestPushThroughFaults pushes a build through a proxy that resets or
// refuses 30% of the requests to the real registry.
func TestPushThroughFaults(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{})
	proxy := registrytest.NewFaultProxy(t, "http://"+reg.Host, 0.3, 2, 4)
	base := registryWithBases(t)
	ctxDir := registryContext(t, "FROM "+base+"/library/busybox:latest\nRUN head -c 300000 /dev/urandom > /noise\nCOPY greeting /greeting\n")
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", proxy.Host+"/flaky/app:1", "--push", ctxDir)
	if code != 0 {
		t.Fatalf("build --push through faults exited %d:\n%s", code, out)
	}
	resets, unavailable, _ := proxy.Counts()
	if resets+unavailable == 0 {
		t.Fatal("no fault was injected")
	}
	if err := validate.Image(fetchRemote(t, reg.Host+"/flaky/app:1")); err != nil {
		t.Fatalf("the pushed image does not validate: %v", err)
	}
}

// TestInsecureRegistry pushes to a TLS registry whose CA kiln does not
// know: refused with a hint, then accepted with --insecure-registry.
func TestInsecureRegistry(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{TLS: true})
	base := registryWithBases(t)
	root := t.TempDir()
	ctxDir := registryContext(t, "FROM "+base+"/library/busybox:latest\nCOPY greeting /greeting\n")
	out, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", reg.Host+"/app:1", "--push", ctxDir)
	if code != 1 || !strings.Contains(out, "unknown authority") || !strings.Contains(out, "--insecure-registry "+reg.Host) {
		t.Fatalf("push to an unknown CA exited %d:\n%s", code, out)
	}
	out, code = kiln(t, "build", "--root", root, "--progress=plain", "-t", reg.Host+"/app:1", "--push", "--insecure-registry", reg.Host, ctxDir)
	if code != 0 {
		t.Fatalf("push with --insecure-registry exited %d:\n%s", code, out)
	}
}

// TestRegistryOutputs covers -o type=registry (OCI and Docker media types),
// buildx's type=image,push=true and kiln push from an archive and a layout.
func TestRegistryOutputs(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	base := registryWithBases(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	ctxDir := registryContext(t, "FROM "+base+"/library/busybox:latest\nCOPY greeting /greeting\n")
	layout := filepath.Join(t.TempDir(), "layout")
	archive := filepath.Join(t.TempDir(), "app.tar")
	dockerArchive := filepath.Join(t.TempDir(), "docker.tar")
	md := filepath.Join(t.TempDir(), "md.json")
	out, code := kiln(t, "build", "--root", root, "--progress=plain", "-t", reg+"/out/a:1", "--metadata-file", md,
		"-o", "type=registry,oci-mediatypes=false",
		"-o", "type=image,push=true,name="+reg+"/out/b:1",
		"-o", "type=oci,dest="+archive,
		"-o", "type=oci,tar=false,dest="+layout,
		"-o", "type=docker,dest="+dockerArchive,
		ctxDir)
	if code != 0 {
		t.Fatalf("build exited %d:\n%s", code, out)
	}
	tests := []struct {
		ref    string
		wantMT types.MediaType
	}{
		{reg + "/out/a:1", types.DockerManifestSchema2},
		{reg + "/out/b:1", types.OCIManifestSchema1},
	}
	for _, tt := range tests {
		img := fetchRemote(t, tt.ref)
		if mt, _ := img.MediaType(); mt != tt.wantMT {
			t.Errorf("%s has media type %s, want %s", tt.ref, mt, tt.wantMT)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("%s does not validate: %v", tt.ref, err)
		}
	}
	var meta map[string]any
	if b, err := os.ReadFile(md); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if meta["image.name"] != reg+"/out/a:1,"+reg+"/out/b:1" {
		t.Errorf("metadata names %v, want both pushes", meta["image.name"])
	}

	for _, src := range []struct{ name, path string }{{"archive", archive}, {"layout", layout}, {"docker", dockerArchive}} {
		t.Run("kiln push "+src.name, func(t *testing.T) {
			dest := reg + "/pushed/" + src.name + ":1"
			out, code := kiln(t, "push", "--root", root, src.path, dest)
			if code != 0 {
				t.Fatalf("kiln push exited %d:\n%s", code, out)
			}
			m := pushedRE.FindStringSubmatch(out)
			if m == nil || m[1] != dest {
				t.Fatalf("no pushed line for %s:\n%s", dest, out)
			}
			img := fetchRemote(t, dest)
			if d, _ := img.Digest(); d.String() != m[2] {
				t.Errorf("registry has %s, kiln printed %s", d, m[2])
			}
			if err := validate.Image(img); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("kiln push from the store", func(t *testing.T) {
		// kiln load names the archive's image in the store, whatever
		// build -t does there.
		if out, code := kiln(t, "load", "--root", root, "-i", archive); code != 0 {
			t.Fatalf("kiln load exited %d:\n%s", code, out)
		}
		want, err := fetchRemote(t, reg+"/out/b:1").Digest()
		if err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{reg + "/out/a:1", reg + "/pushed/store:1"},
			{reg + "/out/a:1"}, // DEST defaults to the name
		} {
			out, code := kiln(t, append([]string{"push", "--root", root}, args...)...)
			if code != 0 {
				t.Fatalf("kiln push %v exited %d:\n%s", args, code, out)
			}
			dest := args[len(args)-1]
			img := fetchRemote(t, dest)
			if d, _ := img.Digest(); d != want {
				t.Errorf("%s is %s, want the stored image %s", dest, d, want)
			}
			if err := validate.Image(img); err != nil {
				t.Error(err)
			}
		}
		out, code := kiln(t, "push", "--root", root, reg+"/never/built:1")
		if code != 1 || !strings.Contains(out, "no image named") {
			t.Errorf("pushing an unknown name exited %d:\n%s", code, out)
		}
	})
}

// TestPushUsage checks the mistakes that must fail before any build work.
func TestPushUsage(t *testing.T) {
	registryEnv(t)
	ctxDir := registryContext(t, "FROM scratch\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"build", "--push", ctxDir}, "--push needs a name"},
		{[]string{"build", "--push", "-t", "UPPER/case", ctxDir}, "-t \"UPPER/case\""},
		{[]string{"build", "--registry-mirror", "docker.io=http://", ctxDir}, "--registry-mirror"},
		{[]string{"login", "r.example"}, "needs a username"},
		{[]string{"login", "r.example", "-u", "ci"}, "--password-stdin"},
		{[]string{"push"}, "SOURCE"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, code := kiln(t, append(tt.args, "--root", t.TempDir())...)
			if code != 2 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want 2 with %q:\n%s", code, tt.want, out)
			}
		})
	}
	if err := os.WriteFile(os.Getenv("KILN_CONFIG"), []byte("[registry.\"docker.io\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := kiln(t, "build", "--root", t.TempDir(), ctxDir)
	if code == 0 || !strings.Contains(out, "kiln config") {
		t.Errorf("a broken kiln.toml: exit %d:\n%s", code, out)
	}
}

// uncompressedLayer is an uncompressed layer: its blob is the tar itself.
type uncompressedLayer struct {
	tar []byte
	mt  types.MediaType
}

func (l uncompressedLayer) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(l.tar))
	return h, err
}
func (l uncompressedLayer) DiffID() (v1.Hash, error) { return l.Digest() }
func (l uncompressedLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}
func (l uncompressedLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l uncompressedLayer) Size() (int64, error)                 { return int64(len(l.tar)), nil }
func (l uncompressedLayer) MediaType() (types.MediaType, error)  { return l.mt, nil }

// TestPullLayerFormats builds FROM the busybox base re-published with
// zstd, uncompressed and gzip layers, in OCI and Docker media types.
func TestPullLayerFormats(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	reg := registryWithBases(t)
	busybox := fetchRemote(t, reg+"/library/busybox:latest")
	layers, err := busybox.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var tars [][]byte
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, b)
	}
	cfg, err := busybox.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.RootFS.DiffIDs = nil
	cfg.History = nil

	tests := []struct {
		name     string
		manifest types.MediaType
		layer    func(tar []byte) v1.Layer
	}{
		{"oci-zstd", types.OCIManifestSchema1, func(b []byte) v1.Layer {
			l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
				tarball.WithCompression("zstd"), tarball.WithMediaType(types.OCILayerZStd))
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
		{"oci-uncompressed", types.OCIManifestSchema1, func(b []byte) v1.Layer { return uncompressedLayer{b, types.OCIUncompressedLayer} }},
		{"docker-uncompressed", types.DockerManifestSchema2, func(b []byte) v1.Layer { return uncompressedLayer{b, types.DockerUncompressedLayer} }},
		{"docker-gzip", types.DockerManifestSchema2, func(b []byte) v1.Layer {
			l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := mutate.ConfigFile(empty.Image, cfg)
			if err != nil {
				t.Fatal(err)
			}
			img = mutate.MediaType(img, tt.manifest)
			if tt.manifest == types.OCIManifestSchema1 {
				img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
			}
			for _, b := range tars {
				if img, err = mutate.AppendLayers(img, tt.layer(b)); err != nil {
					t.Fatal(err)
				}
			}
			ref := reg + "/formats/" + tt.name + ":1"
			if _, err := (&registry.Resolver{}).Push(context.Background(), img, []string{ref}); err != nil {
				t.Fatal(err)
			}
			ctxDir := registryContext(t, "FROM "+ref+"\nRUN test -x /bin/sh && echo ok > /ok\n")
			if out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", ctxDir); code != 0 {
				t.Fatalf("build FROM %s exited %d:\n%s", tt.name, code, out)
			}
		})
	}
}

// TestPushArchives pushes archives other tools wrote: a docker save
// tarball (manifest.json only) with its recorded name, and by --name from
// one holding two images.
func TestPushArchives(t *testing.T) {
	registryEnv(t)
	reg := registryWithBases(t)
	a, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	one := filepath.Join(t.TempDir(), "one.tar")
	tagA, _ := name.NewTag(reg + "/saved/a:1")
	if err := tarball.WriteToFile(one, tagA, a); err != nil {
		t.Fatal(err)
	}
	two := filepath.Join(t.TempDir(), "two.tar")
	tagB, _ := name.NewTag(reg + "/saved/b:1")
	if err := tarball.MultiRefWriteToFile(two, map[name.Reference]v1.Image{tagA: a, tagB: b}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		wantCode int
		wantRef  string
		want     v1.Image
		wantOut  string
	}{
		{args: []string{one}, wantRef: reg + "/saved/a:1", want: a},
		{args: []string{one, reg + "/copied/a:2"}, wantRef: reg + "/copied/a:2", want: a},
		{args: []string{"--name", reg + "/saved/b:1", two, reg + "/copied/b:1"}, wantRef: reg + "/copied/b:1", want: b},
		{args: []string{two, reg + "/copied/x:1"}, wantCode: 2, wantOut: "choose one with --name"},
		{args: []string{filepath.Join(t.TempDir(), "absent.tar")}, wantCode: 2, wantOut: "neither a file nor an image name"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, code := kiln(t, append([]string{"push", "--root", t.TempDir()}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tt.wantCode, tt.wantOut, out)
			}
			if tt.wantCode != 0 {
				return
			}
			got, _ := fetchRemote(t, tt.wantRef).Digest()
			want, _ := tt.want.Digest()
			if got != want {
				t.Errorf("%s holds %s, want %s", tt.wantRef, got, want)
			}
			if !strings.Contains(out, want.String()) {
				t.Errorf("the digest was not printed:\n%s", out)
			}
		})
	}
}

// TestPushMountsBase builds FROM a base in the registry it pushes to: the
// base layers must be mounted from the base's repository, not uploaded.
func TestPushMountsBase(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{})
	// A proxy that injects nothing records what kiln asks.
	proxy := registrytest.NewFaultProxy(t, "http://"+reg.Host, 0, 0, 1)
	busybox := fetchRemote(t, registryWithBases(t)+"/library/busybox:latest")
	if _, err := (&registry.Resolver{}).Push(context.Background(), busybox, []string{proxy.Host + "/library/busybox:latest"}); err != nil {
		t.Fatal(err)
	}
	baseLayers, _ := busybox.Layers()
	before := len(proxy.Requests())
	ctxDir := registryContext(t, "FROM "+proxy.Host+"/library/busybox:latest\nCOPY greeting /greeting\n")
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-t", proxy.Host+"/team/app:1", "--push", ctxDir)
	if code != 0 {
		t.Fatalf("build --push exited %d:\n%s", code, out)
	}
	mounts := 0
	for _, r := range proxy.Requests()[before:] {
		if r.Method == "POST" && strings.Contains(r.Query, "mount=") && strings.Contains(r.Query, "from=library%2Fbusybox") {
			mounts++
		}
	}
	if mounts != len(baseLayers) {
		t.Errorf("%d cross-repository mounts, want one per base layer (%d)", mounts, len(baseLayers))
	}
	if err := validate.Image(fetchRemote(t, reg.Host+"/team/app:1")); err != nil {
		t.Error(err)
	}
}
