package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/provenance"
)

// parseProvenanceFlags reads --provenance and the --attest flags into one
// request; unset, pushes get min provenance as in buildx (unless
// BUILDX_NO_DEFAULT_ATTESTATIONS is set, buildx's switch for that default).
func parseProvenanceFlags(prov string, attests []string) (provenance.Request, error) {
	var reqs []provenance.Request
	for _, a := range attests {
		r, err := provenance.ParseAttest(a)
		if err != nil {
			return provenance.Request{}, &usageError{err}
		}
		reqs = append(reqs, r)
	}
	if prov != "" {
		r, err := provenance.ParseFlag(prov)
		if err != nil {
			return provenance.Request{}, &usageError{err}
		}
		reqs = append(reqs, r)
	}
	req := provenance.Merge(reqs...)
	if !req.Set {
		if v := os.Getenv("BUILDX_NO_DEFAULT_ATTESTATIONS"); v != "" && v != "0" && v != "false" {
			req = provenance.Request{Set: true, Disabled: true}
		}
	}
	return req, nil
}

// recordingResolver remembers every image the build resolves, for the
// provenance's resolvedDependencies.
type recordingResolver struct {
	next planner.ImageResolver
	mu   sync.Mutex
	seen []provenance.Base
}

func (r *recordingResolver) ResolvePlatform(ctx context.Context, ref string, p ocispec.Platform) (v1.Image, string, error) {
	img, canonical, err := r.next.ResolvePlatform(ctx, ref, p)
	if err != nil {
		return img, canonical, err
	}
	if dg, err := img.Digest(); err == nil {
		r.mu.Lock()
		r.seen = append(r.seen, provenance.Base{Ref: ref, Digest: dg, Platform: platform.Format(p)})
		r.mu.Unlock()
	}
	return img, canonical, nil
}

func (r *recordingResolver) bases() []provenance.Base {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]provenance.Base(nil), r.seen...)
}

// provenanceInputs is what runBuild knows of the build for its provenance.
type provenanceInputs struct {
	req            provenance.Request
	contextDir     string
	dockerfilePath string
	dockerfile     []byte
	target         string
	buildArgs      map[string]string
	labels         map[string]string
	secretIDs      []string
	started        time.Time
	resolver       *recordingResolver
	log            io.Writer
	// platform is the image's platform ("linux/arm64") for subject names;
	// "" is linux/amd64.
	platform string
	// invocation is the build's invocation id, the same in every output's
	// provenance, as BuildKit's is per build request.
	invocation string

	once sync.Once
	git  *provenance.Git
}

// attester returns the provenance Attester for one output, or nil when
// that output gets no provenance. A request the output cannot honour (a
// docker archive, a root filesystem) is skipped with a note, as BuildKit
// drops attestations for those exporters.
func (p *provenanceInputs) attester(out export.Output) export.Attester {
	push := out.Type == "registry"
	mode, on := p.req.Resolve(push)
	if !on {
		return nil
	}
	if out.Type != "oci" && out.Type != "registry" {
		if p.req.Set {
			fmt.Fprintf(p.log, "note: no provenance in the type=%s output: %s\n", out.Type, whyNoAttestation(out.Type))
		}
		return nil
	}
	if p.invocation == "" {
		p.invocation = provenance.NewInvocationID()
	}
	invocation := p.invocation
	return func(subject v1.Descriptor, names []string) ([]export.Attestation, error) {
		plat := p.platform
		if subject.Platform != nil {
			plat = subject.Platform.String()
		}
		st, err := provenance.Statement(p.build(invocation), mode, provenanceSubjects(subject.Digest, names, plat))
		if err != nil {
			return nil, err
		}
		return []export.Attestation{{PredicateType: provenance.PredicateType, Statement: st}}, nil
	}
}

func whyNoAttestation(typ string) string {
	if typ == "docker" {
		return "docker load cannot hold attestations (use type=oci or push)"
	}
	return "a root filesystem has no manifest to attach it to"
}

func provenanceSubjects(dg v1.Hash, names []string, plat string) []provenance.Subject {
	if len(names) == 0 {
		return []provenance.Subject{{Name: provenance.SubjectName(""), Digest: dg}}
	}
	out := make([]provenance.Subject, 0, len(names))
	for _, n := range names {
		out = append(out, provenance.Subject{Name: provenance.SubjectNameFor(n, plat), Digest: dg})
	}
	return out
}

func (p *provenanceInputs) build(invocation string) provenance.Build {
	p.once.Do(func() {
		g, err := provenance.ReadGit(p.contextDir)
		if err != nil {
			// The provenance then lacks the commit; the build is fine.
			fmt.Fprintf(p.log, "warning: provenance: reading the context's git checkout: %v\n", err)
			return
		}
		p.git = g
	})
	builderID := p.req.BuilderID
	if builderID == "" {
		builderID = provenance.BuilderIDFromEnv(os.Getenv)
	}
	ids := append([]string(nil), p.secretIDs...)
	sort.Strings(ids)
	return provenance.Build{
		DockerfilePath: p.dockerfilePath,
		Dockerfile:     p.dockerfile,
		Target:         p.target,
		BuildArgs:      p.buildArgs,
		Labels:         p.labels,
		SecretIDs:      ids,
		Bases:          p.resolver.bases(),
		Git:            p.git,
		InvocationID:   invocation,
		Started:        p.started,
		Finished:       time.Now(),
		BuilderID:      builderID,
		Version:        currentVersion().Version,
	}
}

// dockerfileProvenancePath is the Dockerfile's path as provenance names
// it: relative to the context when it lies inside, else its base name.
func dockerfileProvenancePath(contextDir, dfPath string) string {
	if dfPath == "-" {
		return "Dockerfile"
	}
	if rel, err := filepath.Rel(contextDir, dfPath); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return filepath.Base(dfPath)
}

// sortedSecretIDs returns the ids of the --secret flags, sorted.
func sortedSecretIDs[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
