package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/internal/testutil"
	"github.com/kiln-build/kiln/registry"
	"github.com/kiln-build/kiln/registry/registrytest"
)

// provGitCheckout turns dir into a git checkout with one commit and an origin
// remote whose URL carries a token, and returns the commit id.
func provGitCheckout(t *testing.T, dir string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testutil.SkipHost(t, "needs git: apt-get install git")
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"-c", "user.name=kiln", "-c", "user.email=kiln@example.com", "add", "."},
		{"-c", "user.name=kiln", "-c", "user.email=kiln@example.com", "commit", "-q", "-m", "context"},
		{"remote", "add", "origin", "https://ci:s3cret-token@example.com/team/app.git"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	cmd := exec.Command("git", "rev-parse", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// provAttestation is what a reader of BuildKit's layout finds for an image.
type provAttestation struct {
	index     v1.ImageIndex
	image     v1.Hash // the image manifest the attestation is about
	statement []byte
}

// provFindAttestation walks an index as `docker buildx imagetools inspect`
// does: the image entry, then the attestation manifest whose reference
// annotations name it, then its SLSA layer.
func provFindAttestation(t *testing.T, idx v1.ImageIndex) provAttestation {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index has %d entries, want the image and its attestation manifest: %+v", len(im.Manifests), im.Manifests)
	}
	img, att := im.Manifests[0], im.Manifests[1]
	if img.Platform == nil || img.Platform.OS != "linux" || img.Platform.Architecture != "amd64" || !img.MediaType.IsImage() {
		t.Errorf("image entry %+v", img)
	}
	if att.Platform == nil || att.Platform.OS != "unknown" || att.Platform.Architecture != "unknown" ||
		att.Annotations["vnd.docker.reference.type"] != "attestation-manifest" ||
		att.Annotations["vnd.docker.reference.digest"] != img.Digest.String() {
		t.Errorf("attestation entry %+v", att)
	}
	child, err := idx.Image(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(child); err != nil {
		t.Errorf("the attested image does not validate: %v", err)
	}
	ai, err := idx.Image(att.Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ai.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if l.MediaType != "application/vnd.in-toto+json" || l.Annotations["in-toto.io/predicate-type"] != "https://slsa.dev/provenance/v1" {
			continue
		}
		layer, err := ai.LayerByDigest(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return provAttestation{index: idx, image: img.Digest, statement: b}
	}
	t.Fatalf("no SLSA provenance layer in the attestation manifest: %+v", m.Layers)
	return provAttestation{}
}

// provStatement is the part of an in-toto statement with a SLSA v1
// predicate that provValidateSLSA reads.
type provStatement struct {
	Type          string `json:"_type"`
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate struct {
		BuildDefinition struct {
			BuildType            string         `json:"buildType"`
			ExternalParameters   map[string]any `json:"externalParameters"`
			ResolvedDependencies []struct {
				URI     string            `json:"uri"`
				Name    string            `json:"name"`
				Digest  map[string]string `json:"digest"`
				Content string            `json:"content"`
			} `json:"resolvedDependencies"`
		} `json:"buildDefinition"`
		RunDetails struct {
			Builder struct {
				ID string `json:"id"`
			} `json:"builder"`
			Metadata struct {
				InvocationID string `json:"invocationId"`
				StartedOn    string `json:"startedOn"`
				FinishedOn   string `json:"finishedOn"`
			} `json:"metadata"`
		} `json:"runDetails"`
	} `json:"predicate"`
}

// provValidateSLSA checks a statement against the required fields of in-toto
// Statement v1 and SLSA provenance v1 (slsa.dev/spec/v1.0/provenance):
// subjects with digests (here: the image manifest's), buildType a URI,
// externalParameters present, every resolved dependency identified by a
// well-formed digest, builder.id a URI, timestamps RFC 3339 and in order.
func provValidateSLSA(t *testing.T, raw []byte, image v1.Hash) provStatement {
	t.Helper()
	var st provStatement
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("statement is not JSON: %v\n%s", err, raw)
	}
	if st.Type != "https://in-toto.io/Statement/v1" && st.Type != "https://in-toto.io/Statement/v0.1" {
		t.Errorf("_type %q", st.Type)
	}
	if st.PredicateType != "https://slsa.dev/provenance/v1" {
		t.Errorf("predicateType %q", st.PredicateType)
	}
	if len(st.Subject) == 0 {
		t.Error("no subject")
	}
	for _, s := range st.Subject {
		if s.Name == "" || len(s.Digest) == 0 || s.Digest["sha256"] != image.Hex {
			t.Errorf("subject %+v: want a name and the image manifest digest %s", s, image)
		}
	}
	isURI := func(s string) bool {
		u, err := url.Parse(s)
		return err == nil && u.Scheme != "" && (u.Host != "" || u.Opaque != "")
	}
	bd := st.Predicate.BuildDefinition
	if !isURI(bd.BuildType) {
		t.Errorf("buildType %q is not a URI", bd.BuildType)
	}
	if bd.ExternalParameters == nil {
		t.Error("externalParameters missing")
	}
	wantLen := map[string]int{"sha256": 64, "sha1": 40, "sha512": 128}
	for _, d := range bd.ResolvedDependencies {
		if d.URI == "" && len(d.Digest) == 0 && d.Content == "" {
			t.Errorf("resolved dependency %+v has neither uri, digest nor content", d)
		}
		for alg, v := range d.Digest {
			if _, err := hex.DecodeString(v); err != nil || (wantLen[alg] != 0 && len(v) != wantLen[alg]) {
				t.Errorf("resolved dependency %+v: bad %s digest", d, alg)
			}
		}
	}
	rd := st.Predicate.RunDetails
	if !isURI(rd.Builder.ID) {
		t.Errorf("builder.id %q is not a URI", rd.Builder.ID)
	}
	var times []time.Time
	for _, s := range []string{rd.Metadata.StartedOn, rd.Metadata.FinishedOn} {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Errorf("timestamp %q: %v", s, err)
		}
		times = append(times, tm)
	}
	if len(times) == 2 && times[1].Before(times[0]) {
		t.Errorf("finishedOn %v before startedOn %v", times[1], times[0])
	}
	if rd.Metadata.InvocationID == "" {
		t.Error("no invocationId")
	}
	return st
}

func provRemoteIndex(t *testing.T, ref string) v1.ImageIndex {
	t.Helper()
	r := &registry.Resolver{}
	n, err := r.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(n, r.Options(context.Background())...)
	if err != nil {
		t.Fatalf("fetching %s: %v", ref, err)
	}
	if !desc.MediaType.IsIndex() {
		t.Fatalf("%s is a %s, want an index holding the attestation", ref, desc.MediaType)
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestProvenance is issue 10's provenance: BuildKit's attestation layout
// on pushes (min by default) and OCI archives, a statement that validates
// against SLSA v1, min vs max, --provenance=false, the context's git
// commit, and an attestation that survives a crane copy between
// repositories of the real registry.
func TestProvenance(t *testing.T) {
	needRoot(t)
	registryEnv(t)
	base := registryWithBases(t)
	reg := registrytest.StartDistribution(t, registrytest.DistributionOptions{})
	ctxDir := registryContext(t, "FROM "+base+"/library/busybox:latest\nARG FLAVOUR=plain\nLABEL flavour=$FLAVOUR\nCOPY greeting /greeting\n")
	commit := provGitCheckout(t, ctxDir)
	root := t.TempDir()
	build := func(t *testing.T, args ...string) string {
		t.Helper()
		all := append([]string{"build", "--root", root, "--progress=plain", "--build-arg", "FLAVOUR=lemon-secret"}, args...)
		out, code := kiln(t, append(all, ctxDir)...)
		if code != 0 {
			t.Fatalf("kiln %v exited %d:\n%s", all, code, out)
		}
		return out
	}
	baseDigest := func(t *testing.T) v1.Hash {
		d, err := fetchRemote(t, base+"/library/busybox:latest").Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}(t)

	// checkCommon checks what every mode records.
	checkCommon := func(t *testing.T, st provStatement) {
		t.Helper()
		bd := st.Predicate.BuildDefinition
		var haveBase, haveGit bool
		for _, d := range bd.ResolvedDependencies {
			if d.Digest["sha256"] == baseDigest.Hex && strings.HasPrefix(d.URI, "pkg:docker/"+base+"/library/busybox@latest") {
				haveBase = true
			}
			if d.Digest["sha1"] == commit {
				haveGit = true
				if d.URI != "https://example.com/team/app.git#refs/heads/main" {
					t.Errorf("git dependency uri %q (credentials must be gone)", d.URI)
				}
			}
		}
		if !haveBase || !haveGit {
			t.Errorf("resolvedDependencies %+v: want the base %s and the commit %s", bd.ResolvedDependencies, baseDigest, commit)
		}
		cs, _ := bd.ExternalParameters["configSource"].(map[string]any)
		if cs["path"] != "Dockerfile" {
			t.Errorf("configSource %v", cs)
		}
		req, _ := bd.ExternalParameters["request"].(map[string]any)
		if req["frontend"] != "dockerfile" {
			t.Errorf("request %v", req)
		}
	}
	hasBuildArg := func(st provStatement) bool {
		req, _ := st.Predicate.BuildDefinition.ExternalParameters["request"].(map[string]any)
		args, _ := req["args"].(map[string]any)
		return args["build-arg:FLAVOUR"] == "lemon-secret"
	}

	t.Run("push: min by default, survives crane copy", func(t *testing.T) {
		ref := reg.Host + "/prov/app:min"
		out := build(t, "-t", ref, "--push")
		a := provFindAttestation(t, provRemoteIndex(t, ref))
		st := provValidateSLSA(t, a.statement, a.image)
		checkCommon(t, st)
		if hasBuildArg(st) || strings.Contains(string(a.statement), "lemon-secret") || strings.Contains(string(a.statement), "s3cret-token") {
			t.Errorf("min provenance shows a build arg value or a credential:\n%s", a.statement)
		}
		if _, ok := st.Predicate.BuildDefinition.ExternalParameters["dockerfile"]; ok {
			t.Error("min provenance holds the Dockerfile text")
		}
		// The summary's manifest is the image's; the push line names the index.
		idxDigest, _ := a.index.Digest()
		if !strings.Contains(out, "pushed "+ref+"@"+idxDigest.String()) || !strings.Contains(out, "manifest "+a.image.String()) {
			t.Errorf("output does not name the pushed index %s and the image manifest %s:\n%s", idxDigest, a.image, out)
		}

		dst := reg.Host + "/copied/app:min"
		if err := crane.Copy(ref, dst, crane.WithContext(context.Background())); err != nil {
			t.Fatalf("crane copy: %v", err)
		}
		c := provFindAttestation(t, provRemoteIndex(t, dst))
		if cd, _ := c.index.Digest(); cd != idxDigest || c.image != a.image || string(c.statement) != string(a.statement) {
			t.Errorf("the copy differs: index %s, image %s", cd, c.image)
		}
		provValidateSLSA(t, c.statement, a.image)
	})

	t.Run("mode=max keeps build args and the Dockerfile", func(t *testing.T) {
		ref := reg.Host + "/prov/app:max"
		build(t, "--provenance=mode=max", "-o", "type=registry,name="+ref)
		a := provFindAttestation(t, provRemoteIndex(t, ref))
		st := provValidateSLSA(t, a.statement, a.image)
		checkCommon(t, st)
		if !hasBuildArg(st) {
			t.Errorf("max provenance lacks the build arg:\n%s", a.statement)
		}
		if df, _ := st.Predicate.BuildDefinition.ExternalParameters["dockerfile"].(string); !strings.Contains(df, "ARG FLAVOUR=plain") {
			t.Errorf("max provenance lacks the Dockerfile text:\n%s", a.statement)
		}
	})

	t.Run("--provenance=false pushes a plain manifest", func(t *testing.T) {
		ref := reg.Host + "/prov/app:none"
		build(t, "--provenance=false", "-t", ref, "--push")
		r := &registry.Resolver{}
		n, _ := r.Parse(ref)
		desc, err := remote.Get(n, r.Options(context.Background())...)
		if err != nil {
			t.Fatal(err)
		}
		if desc.MediaType != types.OCIManifestSchema1 {
			t.Errorf("%s is a %s, want a plain image manifest", ref, desc.MediaType)
		}
	})

	t.Run("--attest on an OCI archive", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "app.tar")
		build(t, "--attest", "type=provenance,mode=max", "-t", "app:1", "-o", "type=oci,dest="+dest)
		dir := t.TempDir()
		if out, err := exec.Command("tar", "-xf", dest, "-C", dir).CombinedOutput(); err != nil {
			t.Fatalf("untar: %v\n%s", err, out)
		}
		lp, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		im, err := lp.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsIndex() {
			t.Fatalf("index.json %+v: want one entry naming an index", im.Manifests)
		}
		idx, err := lp.ImageIndex(im.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		a := provFindAttestation(t, idx)
		st := provValidateSLSA(t, a.statement, a.image)
		checkCommon(t, st)
		if !hasBuildArg(st) {
			t.Error("mode=max lost the build arg")
		}
		if out, code := kiln(t, "inspect", dest); code != 0 || !strings.Contains(out, a.image.String()) {
			t.Errorf("kiln inspect of an attested archive exited %d, want the image %s:\n%s", code, a.image, out)
		}
		if out, code := kiln(t, "load", "--root", t.TempDir(), "-i", dest); code != 0 || !strings.Contains(out, "app:1") {
			t.Errorf("kiln load of an attested archive exited %d:\n%s", code, out)
		}
		// kiln push of the archive carries the attestation along.
		pushed := reg.Host + "/prov/pushed:1"
		if out, code := kiln(t, "push", "--root", t.TempDir(), dest, pushed); code != 0 {
			t.Fatalf("kiln push of an attested archive exited %d:\n%s", code, out)
		}
		p := provFindAttestation(t, provRemoteIndex(t, pushed))
		if p.image != a.image || string(p.statement) != string(a.statement) {
			t.Errorf("kiln push changed the image (%s, was %s) or its statement", p.image, a.image)
		}
	})

	t.Run("no provenance by default on files; a docker archive says why", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "plain.tar")
		build(t, "-o", "type=oci,dest="+dest)
		out := build(t, "--provenance=true", "-o", "type=docker,dest="+filepath.Join(t.TempDir(), "d.tar"))
		if !strings.Contains(out, "no provenance in the type=docker output") {
			t.Errorf("no note about the docker archive:\n%s", out)
		}
		dir := t.TempDir()
		if out, err := exec.Command("tar", "-xf", dest, "-C", dir).CombinedOutput(); err != nil {
			t.Fatalf("untar: %v\n%s", err, out)
		}
		lp, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		im, _ := lp.IndexManifest()
		if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsImage() {
			t.Errorf("a plain oci output holds %+v, want one image", im.Manifests)
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, tt := range []struct{ flag, want string }{
			{"--provenance=mode=mid", "want min or max"},
			{"--attest=type=sbom", "does not generate SBOMs"},
		} {
			out, code := kiln(t, "build", "--root", root, tt.flag, ctxDir)
			if code != 2 || !strings.Contains(out, tt.want) {
				t.Errorf("%s exited %d:\n%s", tt.flag, code, out)
			}
		}
	})
}
