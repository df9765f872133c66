package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker-credential-helpers/credentials"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/registry/registrytest"
)

// helperName is the credential helper this test binary plays when run as
// docker-credential-kilntest (see TestMain).
const helperName = "kilntest"

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "docker-credential-"+helperName {
		credentials.Serve(fileHelper{dir: os.Getenv("KILN_TEST_CREDS")})
		return
	}
	os.Exit(m.Run())
}

// fileHelper keeps credentials as files, one per server.
type fileHelper struct{ dir string }

type storedCreds struct{ Username, Secret string }

func (h fileHelper) path(server string) string {
	return filepath.Join(h.dir, url.PathEscape(server))
}

func (h fileHelper) Add(c *credentials.Credentials) error {
	b, _ := json.Marshal(storedCreds{c.Username, c.Secret})
	return os.WriteFile(h.path(c.ServerURL), b, 0o600)
}

func (h fileHelper) Delete(server string) error {
	if err := os.Remove(h.path(server)); errors.Is(err, os.ErrNotExist) {
		return credentials.NewErrCredentialsNotFound()
	} else if err != nil {
		return err
	}
	return nil
}

func (h fileHelper) Get(server string) (string, string, error) {
	b, err := os.ReadFile(h.path(server))
	if err != nil {
		return "", "", credentials.NewErrCredentialsNotFound()
	}
	var c storedCreds
	if err := json.Unmarshal(b, &c); err != nil {
		return "", "", err
	}
	return c.Username, c.Secret, nil
}

func (h fileHelper) List() (map[string]string, error) {
	ents, err := os.ReadDir(h.dir)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range ents {
		s, _ := url.PathUnescape(e.Name())
		u, _, _ := h.Get(s)
		out[s] = u
	}
	return out, nil
}

// fastBackoff keeps retry tests quick.
var fastBackoff = remote.Backoff{Duration: 5 * time.Millisecond, Factor: 1.5, Jitter: 0.1, Steps: 6}

// staticKeychain has one registry's credentials.
type staticKeychain struct{ host, user, pass string }

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		return authn.FromConfig(authn.AuthConfig{Username: k.user, Password: k.pass}), nil
	}
	return authn.Anonymous, nil
}

func randomImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pushRandom pushes a random image to host/repo through r and returns the
// full reference.
func pushRandom(t testing.TB, host, repo string, r *Resolver) string {
	t.Helper()
	ref := host + "/" + repo
	if _, err := r.Push(context.Background(), randomImage(t), []string{ref}); err != nil {
		t.Fatal(err)
	}
	return ref
}

// readAll reads every layer of img, as a build unpacking it would.
func readAll(t testing.TB, img v1.Image) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
}

func TestResolveShortNameThroughMirror(t *testing.T) {
	mirror := registrytest.Serve(t, registrytest.ServerOptions{})
	img := randomImage(t)
	if _, err := (&Resolver{}).Push(context.Background(), img, []string{mirror.Host + "/library/busybox:latest"}); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	// Docker Hub is out of reach here: the mirror is the only route.
	r := &Resolver{Config: Config{Registry: map[string]HostConfig{"docker.io": {Mirrors: []string{mirror.Host}}}}}
	got, canonical, err := r.Resolve(context.Background(), "busybox")
	if err != nil {
		t.Fatal(err)
	}
	if canonical != "index.docker.io/library/busybox@"+want.String() {
		t.Errorf("canonical name %q: want the origin's name with the digest %s", canonical, want)
	}
	readAll(t, got)
}

func TestMirrors(t *testing.T) {
	origin := registrytest.Serve(t, registrytest.ServerOptions{})
	full := registrytest.Serve(t, registrytest.ServerOptions{})
	empty := registrytest.Serve(t, registrytest.ServerOptions{})
	pathed := registrytest.Serve(t, registrytest.ServerOptions{})
	stale := registrytest.Serve(t, registrytest.ServerOptions{})

	img := randomImage(t)
	d, _ := img.Digest()
	r0 := &Resolver{}
	for _, ref := range []string{origin.Host + "/team/app:1", full.Host + "/team/app:1", pathed.Host + "/hub/team/app:1"} {
		if _, err := r0.Push(context.Background(), img, []string{ref}); err != nil {
			t.Fatal(err)
		}
	}
	// stale has another image under the same tag: a digest reference must
	// not take it.
	pushRandom(t, stale.Host, "team/app:1", r0)

	tests := []struct {
		name     string
		ref      string
		mirrors  []string
		wantFrom *registrytest.Server
		wantErr  string
	}{
		{name: "mirror first", ref: origin.Host + "/team/app:1", mirrors: []string{full.Host}, wantFrom: full},
		{name: "dead mirror skipped", ref: origin.Host + "/team/app:1", mirrors: []string{"127.0.0.1:1", full.Host}, wantFrom: full},
		{name: "mirror without the image", ref: origin.Host + "/team/app:1", mirrors: []string{empty.Host}, wantFrom: origin},
		{name: "mirror with a path", ref: origin.Host + "/team/app:1", mirrors: []string{pathed.Host + "/hub"}, wantFrom: pathed},
		{name: "digest not on the mirror", ref: origin.Host + "/team/app@" + d.String(), mirrors: []string{stale.Host}, wantFrom: origin},
		{name: "nowhere", ref: origin.Host + "/team/absent:1", mirrors: []string{empty.Host}, wantErr: "through its mirrors"},
		{name: "absent", ref: origin.Host + "/team/absent:1", wantErr: "registry " + origin.Host + " has no such image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := []*registrytest.Server{origin, full, empty, pathed, stale}
			before := map[*registrytest.Server]int{}
			for _, h := range hosts {
				before[h] = len(h.Requests())
			}
			r := &Resolver{Config: Config{Registry: map[string]HostConfig{origin.Host: {Mirrors: tt.mirrors}}}, Backoff: fastBackoff}
			got, canonical, err := r.Resolve(context.Background(), tt.ref)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if canonical != origin.Host+"/team/app@"+d.String() {
				t.Errorf("canonical name %q", canonical)
			}
			readAll(t, got)
			for _, h := range hosts {
				blobs := 0
				for _, req := range h.Requests()[before[h]:] {
					if strings.Contains(req.Path, "/blobs/") {
						blobs++
					}
				}
				if h == tt.wantFrom && blobs == 0 {
					t.Errorf("no layer came from %s", h.Host)
				}
				if h != tt.wantFrom && blobs > 0 {
					t.Errorf("%d layer requests went to %s", blobs, h.Host)
				}
			}
		})
	}
}

// TestAuth pulls from registries that need credentials and redirect blob
// downloads to another host, as registries on object storage do.
func TestAuth(t *testing.T) {
	for _, bearer := range []bool{false, true} {
		kind := map[bool]string{false: "basic", true: "bearer"}[bearer]
		srv := registrytest.Serve(t, registrytest.ServerOptions{User: "ci", Password: "s3cret", Bearer: bearer, RedirectBlobs: true})
		right := &Resolver{Keychain: staticKeychain{srv.Host, "ci", "s3cret"}, Backoff: fastBackoff}
		ref := pushRandom(t, srv.Host, "team/app:1", right)

		tests := []struct {
			name    string
			keys    authn.Keychain
			wantErr []string
		}{
			{name: "right password", keys: staticKeychain{srv.Host, "ci", "s3cret"}},
			{name: "wrong password", keys: staticKeychain{srv.Host, "ci", "guess"}, wantErr: []string{"authentication to registry " + srv.Host + " failed", "rejected"}},
			{name: "no credentials", keys: staticKeychain{"elsewhere.example", "ci", "s3cret"}, wantErr: []string{"authentication to registry " + srv.Host + " failed", "kiln login " + srv.Host}},
		}
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				r := &Resolver{Keychain: tt.keys, Backoff: fastBackoff}
				img, _, err := r.Resolve(context.Background(), ref)
				if tt.wantErr != nil {
					var ae *AuthError
					if !errors.As(err, &ae) {
						t.Fatalf("error %v is no AuthError", err)
					}
					for _, w := range tt.wantErr {
						if !strings.Contains(err.Error(), w) {
							t.Errorf("error %q lacks %q", err, w)
						}
					}
					if strings.Contains(err.Error(), "guess") || strings.Contains(err.Error(), "s3cret") {
						t.Errorf("error %q shows a password", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				readAll(t, img)
				blobs := srv.BlobRequests()
				if len(blobs) == 0 {
					t.Fatal("no blob was fetched from the redirect target")
				}
				for _, b := range blobs {
					if b.Authorization != "" {
						t.Errorf("credentials went to the blob host %s: %s %s", srv.BlobHost, b.Method, b.Path)
					}
				}
			})
		}
	}
}

// TestCredentialsStayHome pulls through a mirror with credentials for the
// origin only: the mirror must never see them.
func TestCredentialsStayHome(t *testing.T) {
	origin := registrytest.Serve(t, registrytest.ServerOptions{User: "ci", Password: "s3cret"})
	mirror := registrytest.Serve(t, registrytest.ServerOptions{})
	keys := staticKeychain{origin.Host, "ci", "s3cret"}
	img := randomImage(t)
	if _, err := (&Resolver{Keychain: keys}).Push(context.Background(), img, []string{origin.Host + "/a:1", mirror.Host + "/a:1"}); err != nil {
		t.Fatal(err)
	}
	r := &Resolver{Keychain: keys, Config: Config{Registry: map[string]HostConfig{origin.Host: {Mirrors: []string{mirror.Host}}}}}
	got, _, err := r.Resolve(context.Background(), origin.Host+"/a:1")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, got)
	for _, req := range mirror.Requests() {
		if req.Authorization != "" {
			t.Errorf("the mirror got credentials: %s %s", req.Method, req.Path)
		}
	}
}

func TestSchema1Refused(t *testing.T) {
	srv := registrytest.Serve(t, registrytest.ServerOptions{})
	body := `{"schemaVersion":1,"name":"old/app","tag":"1","architecture":"amd64","fsLayers":[],"history":[]}`
	req, _ := http.NewRequest(http.MethodPut, "http://"+srv.Host+"/v2/old/app/manifests/1", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("storing a schema 1 manifest: %s", resp.Status)
	}
	_, _, err = (&Resolver{}).Resolve(context.Background(), srv.Host+"/old/app:1")
	if err == nil || !strings.Contains(err.Error(), "schema 1") || !strings.Contains(err.Error(), srv.Host+"/old/app:1") {
		t.Fatalf("error %v, want one naming the image and schema 1", err)
	}
}

// TestPushThroughFaults pushes through a proxy that resets or refuses 30%
// of the requests: the retries must carry the push through, and what lands
// must be a valid image.
func TestPushThroughFaults(t *testing.T) {
	srv := registrytest.Serve(t, registrytest.ServerOptions{})
	proxy := registrytest.NewFaultProxy(t, "http://"+srv.Host, 0.3, 2, 42)
	img, err := random.Image(64<<10, 5)
	if err != nil {
		t.Fatal(err)
	}
	r := &Resolver{Backoff: fastBackoff}
	pushed, err := r.Push(context.Background(), img, []string{proxy.Host + "/flaky/app:1", proxy.Host + "/flaky/app:latest"})
	if err != nil {
		t.Fatal(err)
	}
	resets, unavailable, _ := proxy.Counts()
	if resets == 0 || unavailable == 0 {
		t.Fatalf("the proxy injected %d resets and %d 503s; the test proves nothing", resets, unavailable)
	}
	want, _ := img.Digest()
	for _, p := range pushed {
		if p.Digest != want {
			t.Errorf("pushed %s as %s, want %s", p.Ref, p.Digest, want)
		}
		direct, err := name.ParseReference(srv.Host + "/" + p.Ref.Context().RepositoryStr() + ":" + p.Ref.Identifier())
		if err != nil {
			t.Fatal(err)
		}
		got, err := remote.Image(direct)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(got); err != nil {
			t.Errorf("%s does not validate: %v", p.Ref, err)
		}
	}
}

func TestPushAuth(t *testing.T) {
	srv := registrytest.Serve(t, registrytest.ServerOptions{User: "ci", Password: "s3cret"})
	tests := []struct {
		name    string
		keys    authn.Keychain
		wantErr string
	}{
		{name: "right", keys: staticKeychain{srv.Host, "ci", "s3cret"}},
		{name: "wrong", keys: staticKeychain{srv.Host, "ci", "nope"}, wantErr: "pushing " + srv.Host + "/a:1: authentication to registry " + srv.Host + " failed"},
		{name: "none", keys: staticKeychain{"other", "ci", "s3cret"}, wantErr: "none are configured for it (run `kiln login " + srv.Host + "`)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{Keychain: tt.keys, Backoff: fastBackoff}
			_, err := r.Push(context.Background(), randomImage(t), []string{srv.Host + "/a:1"})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPushSeveralRegistries(t *testing.T) {
	a := registrytest.Serve(t, registrytest.ServerOptions{})
	b := registrytest.Serve(t, registrytest.ServerOptions{})
	img := randomImage(t)
	want, _ := img.Digest()
	refs := []string{a.Host + "/x:1", b.Host + "/y:2", a.Host + "/x:latest", b.Host + "/y@" + want.String()}
	pushed, err := (&Resolver{}).Push(context.Background(), img, refs)
	if err != nil {
		t.Fatal(err)
	}
	if len(pushed) != len(refs) {
		t.Fatalf("%d results for %d references", len(pushed), len(refs))
	}
	for i, p := range pushed {
		if p.Digest != want {
			t.Errorf("%s: digest %s, want %s", refs[i], p.Digest, want)
		}
		got, err := remote.Image(p.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := got.Digest(); d != want {
			t.Errorf("%s holds %s, want %s", p.Ref, d, want)
		}
	}
	// A second push finds every blob there (HEAD) and uploads nothing.
	before := len(a.Requests())
	if _, err := (&Resolver{}).Push(context.Background(), img, refs[:1]); err != nil {
		t.Fatal(err)
	}
	for _, req := range a.Requests()[before:] {
		if req.Method == http.MethodPatch || (req.Method == http.MethodPost && strings.Contains(req.Path, "/blobs/uploads")) {
			t.Errorf("second push uploaded: %s %s", req.Method, req.Path)
		}
	}
}

func TestCheckLogin(t *testing.T) {
	for _, bearer := range []bool{false, true} {
		srv := registrytest.Serve(t, registrytest.ServerOptions{User: "ci", Password: "s3cret", Bearer: bearer})
		for _, tt := range []struct {
			pass string
			ok   bool
		}{{"s3cret", true}, {"wrong", false}} {
			t.Run(fmt.Sprintf("bearer=%v/%s", bearer, tt.pass), func(t *testing.T) {
				err := (&Resolver{}).CheckLogin(context.Background(), srv.Host, "ci", tt.pass)
				if tt.ok {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				var ae *AuthError
				if !errors.As(err, &ae) || !strings.Contains(err.Error(), "authentication to registry "+srv.Host+" failed") {
					t.Fatalf("error %v, want an authentication failure naming %s", err, srv.Host)
				}
				if strings.Contains(err.Error(), "wrong") {
					t.Errorf("error %q shows the password", err)
				}
			})
		}
	}
}

// dockerEnv points Docker's config and HOME at fresh directories.
func dockerEnv(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker"))
	t.Setenv("DOCKER_AUTH_CONFIG", "")
	// No platform credential helper: docker would use one when installed.
	t.Setenv("PATH", filepath.Join(dir, "bin"))
	return filepath.Join(dir, "docker")
}

type dockerConfig struct {
	Auths       map[string]struct{ Auth string } `json:"auths"`
	CredsStore  string                           `json:"credsStore"`
	CredHelpers map[string]string                `json:"credHelpers"`
}

func readDockerConfig(t *testing.T, dir string) dockerConfig {
	t.Helper()
	var c dockerConfig
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSaveLoginLogout(t *testing.T) {
	tests := []struct{ registry, key string }{
		{"127.0.0.1:5000", "127.0.0.1:5000"},
		{"https://registry.example.com/v2/", "registry.example.com"},
		{"docker.io", "https://index.docker.io/v1/"},
		{"index.docker.io", "https://index.docker.io/v1/"},
	}
	for _, tt := range tests {
		t.Run(tt.registry, func(t *testing.T) {
			dir := dockerEnv(t)
			registrytest.WriteFile(t, filepath.Join(dir, "config.json"), []byte(`{"auths":{"other.example":{"auth":"eDp5"}},"detachKeys":"ctrl-x"}`))
			if _, err := SaveLogin(tt.registry, "ci", "p:ss"); err != nil {
				t.Fatal(err)
			}
			c := readDockerConfig(t, dir)
			if got, want := c.Auths[tt.key].Auth, base64.StdEncoding.EncodeToString([]byte("ci:p:ss")); got != want {
				t.Errorf("auths[%q].auth = %q, want %q", tt.key, got, want)
			}
			if c.Auths["other.example"].Auth != "eDp5" {
				t.Error("another registry's credentials were lost")
			}
			raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
			if !strings.Contains(string(raw), `"detachKeys": "ctrl-x"`) {
				t.Errorf("settings kiln does not know were lost:\n%s", raw)
			}

			// The keychain every pull and push uses finds them.
			host := strings.TrimSuffix(strings.TrimPrefix(tt.key, "https://"), "/v1/")
			reg, err := name.NewRegistry(host)
			if err != nil {
				t.Fatal(err)
			}
			a, err := authn.DefaultKeychain.Resolve(reg)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := a.Authorization()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Username != "ci" || cfg.Password != "p:ss" {
				t.Errorf("the keychain found %q/%q", cfg.Username, cfg.Password)
			}

			found, err := Logout(tt.registry)
			if err != nil || !found {
				t.Fatalf("Logout = %v, %v", found, err)
			}
			if _, ok := readDockerConfig(t, dir).Auths[tt.key]; ok {
				t.Error("logout left the credentials")
			}
			if found, err := Logout(tt.registry); err != nil || found {
				t.Errorf("second Logout = %v, %v; want false, nil", found, err)
			}
		})
	}
}

// TestCredentialHelpers stores credentials through credsStore and
// credHelpers, as docker login does: the secret goes to the helper, the
// config keeps at most an empty entry.
func TestCredentialHelpers(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, conf := range []string{
		`{"credsStore":"` + helperName + `"}`,
		`{"credHelpers":{"127.0.0.1:5000":"` + helperName + `"}}`,
	} {
		t.Run(conf, func(t *testing.T) {
			dir := dockerEnv(t)
			bin := filepath.Join(filepath.Dir(dir), "bin")
			if err := os.MkdirAll(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(exe, filepath.Join(bin, "docker-credential-"+helperName)); err != nil {
				t.Fatal(err)
			}
			store := t.TempDir()
			t.Setenv("KILN_TEST_CREDS", store)
			registrytest.WriteFile(t, filepath.Join(dir, "config.json"), []byte(conf))

			where, err := SaveLogin("127.0.0.1:5000", "ci", "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			if where != "docker-credential-"+helperName {
				t.Errorf("stored in %q", where)
			}
			raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
			if strings.Contains(string(raw), base64.StdEncoding.EncodeToString([]byte("ci:s3cret"))) {
				t.Errorf("the secret went into config.json:\n%s", raw)
			}
			u, p, err := fileHelper{store}.Get("127.0.0.1:5000")
			if err != nil || u != "ci" || p != "s3cret" {
				t.Fatalf("the helper holds %q/%q (%v)", u, p, err)
			}
			reg, _ := name.NewRegistry("127.0.0.1:5000")
			a, err := authn.DefaultKeychain.Resolve(reg)
			if err != nil {
				t.Fatal(err)
			}
			if cfg, _ := a.Authorization(); cfg.Password != "s3cret" {
				t.Errorf("the keychain did not read the helper: %+v", cfg)
			}
			found, err := Logout("127.0.0.1:5000")
			if err != nil || !found {
				t.Fatalf("Logout = %v, %v", found, err)
			}
			if _, _, err := (fileHelper{store}).Get("127.0.0.1:5000"); err == nil {
				t.Error("logout left the credentials in the helper")
			}
		})
	}
}

// TestResolveIndex checks that a multi-platform index resolves to its
// linux/amd64 image, and that an index without one says so.
func TestResolveIndex(t *testing.T) {
	srv := registrytest.Serve(t, registrytest.ServerOptions{})
	amd, arm := randomImage(t), randomImage(t)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	armOnly := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	r := &Resolver{}
	if _, err := r.Push(context.Background(), idx, []string{srv.Host + "/multi/app:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Push(context.Background(), armOnly, []string{srv.Host + "/multi/arm:1"}); err != nil {
		t.Fatal(err)
	}
	img, canonical, err := r.Resolve(context.Background(), srv.Host+"/multi/app:1")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := amd.Digest()
	if d, _ := img.Digest(); d != want || canonical != srv.Host+"/multi/app@"+want.String() {
		t.Errorf("resolved %s (%s), want the amd64 image %s", d, canonical, want)
	}
	if _, _, err := r.Resolve(context.Background(), srv.Host+"/multi/arm:1"); err == nil || !strings.Contains(err.Error(), "linux/amd64") {
		t.Errorf("an index without linux/amd64: %v", err)
	}
}

// TestFailedPushLeavesNoTag breaks every blob upload: the push must fail,
// and the tag must not exist, since the manifest goes last.
func TestFailedPushLeavesNoTag(t *testing.T) {
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch || (r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")) {
			http.Error(w, "disk full", http.StatusInternalServerError)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	_, err := (&Resolver{Backoff: fastBackoff}).Push(context.Background(), randomImage(t), []string{host + "/broken/app:1"})
	if err == nil || !strings.Contains(err.Error(), "pushing "+host+"/broken/app:1") {
		t.Fatalf("push to a registry failing every upload: %v", err)
	}
	resp, err := http.Get(srv.URL + "/v2/broken/app/manifests/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the tag exists after a failed push: %s", resp.Status)
	}
}
