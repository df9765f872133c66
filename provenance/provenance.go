// Package provenance writes the SLSA v1 provenance of a kiln build as an
// in-toto statement, the attestation BuildKit attaches with --provenance:
// what was built (the Dockerfile, its target, in max mode its build args and
// text), from what (base images by manifest digest, the context's git
// commit) and by whom (builder id, invocation id, start and finish times).
// The statement's layout is kiln's own, described at BuildType; export
// attaches it to the image the way BuildKit stores attestations.
package provenance

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Names of the formats a statement follows.
const (
	// StatementType is the in-toto statement version written.
	StatementType = "https://in-toto.io/Statement/v1"
	// PredicateType is SLSA provenance v1.
	PredicateType = "https://slsa.dev/provenance/v1"
	// BuildType names the layout of externalParameters and
	// internalParameters, documented at that address.
	BuildType = "https://github.com/kiln-build/kiln/blob/main/docs/provenance.md"
	// DefaultBuilderID is runDetails.builder.id when neither builder-id=
	// nor a CI environment names the build.
	DefaultBuilderID = "https://github.com/kiln-build/kiln"
)

// Mode is how much the provenance tells, with BuildKit's meanings.
type Mode string

const (
	// Min leaves out build args, labels, secret ids and the Dockerfile text,
	// which may hold what a public image should not show.
	Min Mode = "min"
	// Max includes them.
	Max Mode = "max"
)

// Build is what a build tells its provenance.
type Build struct {
	// DockerfilePath is the Dockerfile's path relative to the context
	// when it lies inside, else its base name ("Dockerfile" for stdin).
	DockerfilePath string
	Dockerfile     []byte
	Target         string
	BuildArgs      map[string]string
	Labels         map[string]string
	SecretIDs      []string
	// Bases are the images FROM and COPY --from resolved, in any order.
	Bases []Base
	// Git is the context's checkout, nil when it is not one.
	Git          *Git
	InvocationID string
	Started      time.Time
	Finished     time.Time
	BuilderID    string
	// Version is kiln's version, for runDetails.builder.version.
	Version string
}

// Base is one image the build resolved.
type Base struct {
	// Platform is what it was resolved for ("linux/arm64"); "" is
	// linux/amd64.
	Platform string
	// Ref is the name as the Dockerfile gave it (after ARG expansion).
	Ref string
	// Digest is the manifest digest it resolved to.
	Digest v1.Hash
}

// Subject is one artifact the statement is about: the exported image
// manifest, under one of its names.
type Subject struct {
	Name   string
	Digest v1.Hash
}

// NewInvocationID returns a random id for runDetails.metadata.invocationId.
func NewInvocationID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; a clock-based id still
		// tells invocations apart.
		return fmt.Sprintf("%x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b[:])
}

// BuilderIDFromEnv names the CI run a build happens in, as buildx does for
// GitHub Actions (and GitLab's job URL), or "" outside CI.
func BuilderIDFromEnv(getenv func(string) string) string {
	if s, r, id := getenv("GITHUB_SERVER_URL"), getenv("GITHUB_REPOSITORY"), getenv("GITHUB_RUN_ID"); s != "" && r != "" && id != "" {
		u := strings.TrimSuffix(s, "/") + "/" + r + "/actions/runs/" + id
		if a := getenv("GITHUB_RUN_ATTEMPT"); a != "" && a != "1" {
			u += "/attempts/" + a
		}
		return u
	}
	return getenv("CI_JOB_URL")
}

// Statement returns the in-toto statement of b about subjects in mode m.
func Statement(b Build, m Mode, subjects []Subject) ([]byte, error) {
	if m != Min && m != Max {
		return nil, fmt.Errorf("provenance mode %q: want min or max", m)
	}
	if len(subjects) == 0 {
		return nil, errors.New("writing provenance: no subject")
	}
	st := statement{Type: StatementType, PredicateType: PredicateType, Predicate: predicate(b, m)}
	for _, s := range subjects {
		st.Subject = append(st.Subject, resourceDescriptor{Name: s.Name, Digest: digestSet(s.Digest)})
	}
	out, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encoding the provenance: %w", err)
	}
	return out, nil
}

// SubjectName is an image name as a subject name: a package URL, as
// BuildKit writes it ("pkg:docker/app@1.0?platform=linux%2Famd64"); "_"
// for an unnamed image.
func SubjectName(ref string) string { return SubjectNameFor(ref, "") }

// SubjectNameFor is SubjectName for an image of platform ("linux/arm64";
// "" is linux/amd64), as each platform's provenance of a multi-platform
// build names it.
func SubjectNameFor(ref, platform string) string {
	if ref == "" {
		return "_"
	}
	if p := purl(ref, v1.Hash{}, platform); p != "" {
		return p
	}
	return ref
}

func predicate(b Build, m Mode) provenancePredicate {
	args := map[string]string{}
	if b.Target != "" {
		args["target"] = b.Target
	}
	complete := true
	if m == Max {
		for k, v := range b.BuildArgs {
			args["build-arg:"+k] = v
		}
		for k, v := range b.Labels {
			args["label:"+k] = v
		}
	} else if len(b.BuildArgs) > 0 || len(b.Labels) > 0 || len(b.SecretIDs) > 0 {
		complete = false
	}
	req := request{
		Frontend: "dockerfile",
		Args:     args,
		Locals:   []local{{Name: "context"}, {Name: "dockerfile"}},
	}
	if m == Max {
		ids := append([]string(nil), b.SecretIDs...)
		sort.Strings(ids)
		for _, id := range ids {
			req.Secrets = append(req.Secrets, secret{ID: id})
		}
	}
	df := sha256.Sum256(b.Dockerfile)
	ext := externalParameters{
		ConfigSource: configSource{
			Path:   b.DockerfilePath,
			Digest: map[string]string{"sha256": hex.EncodeToString(df[:])},
		},
		Request: req,
	}
	if m == Max {
		ext.Dockerfile = string(b.Dockerfile)
	}

	var deps []resourceDescriptor
	bases := append([]Base(nil), b.Bases...)
	sort.Slice(bases, func(i, j int) bool {
		if bases[i].Ref != bases[j].Ref {
			return bases[i].Ref < bases[j].Ref
		}
		return bases[i].Digest.String() < bases[j].Digest.String()
	})
	seen := map[string]bool{}
	for _, base := range bases {
		uri := purl(base.Ref, base.Digest, base.Platform)
		if uri == "" {
			uri = base.Ref
		}
		if seen[uri+base.Digest.String()] {
			continue
		}
		seen[uri+base.Digest.String()] = true
		deps = append(deps, resourceDescriptor{URI: uri, Digest: digestSet(base.Digest)})
	}
	if g := b.Git; g != nil && g.Commit != "" {
		d := resourceDescriptor{Name: "context", URI: g.URI(), Digest: map[string]string{g.digestAlgorithm(): g.Commit}}
		deps = append(deps, d)
	}

	builderID := b.BuilderID
	if builderID == "" {
		builderID = DefaultBuilderID
	}
	var version map[string]string
	if b.Version != "" {
		version = map[string]string{"kiln": b.Version}
	}
	md := metadata{InvocationID: b.InvocationID}
	if !b.Started.IsZero() {
		t := b.Started.UTC()
		md.StartedOn = &t
	}
	if !b.Finished.IsZero() {
		t := b.Finished.UTC()
		md.FinishedOn = &t
	}
	md.Completeness = &completeness{Request: complete}
	return provenancePredicate{
		BuildDefinition: buildDefinition{
			BuildType:            BuildType,
			ExternalParameters:   ext,
			InternalParameters:   internalParameters{BuilderPlatform: "linux/amd64"},
			ResolvedDependencies: deps,
		},
		RunDetails: runDetails{
			Builder:  builder{ID: builderID, Version: version},
			Metadata: md,
		},
	}
}

func digestSet(h v1.Hash) map[string]string {
	return map[string]string{h.Algorithm: h.Hex}
}

// purl spells an image reference as a package URL, the way BuildKit names
// images in provenance: pkg:docker/NAME@TAG?platform=linux%2Famd64, with
// the digest as a qualifier when the reference had no tag. "" when ref does
// not parse.
func purl(ref string, dg v1.Hash, platform string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ""
	}
	repo := r.Context()
	n := repo.RepositoryStr()
	if reg := repo.RegistryStr(); reg != name.DefaultRegistry {
		n = reg + "/" + n
	} else {
		n = strings.TrimPrefix(n, "library/")
	}
	q := url.Values{}
	version := ""
	switch t := r.(type) {
	case name.Tag:
		version = t.TagStr()
	case name.Digest:
		q.Set("digest", t.DigestStr())
	}
	if version == "" && dg.Hex != "" && q.Get("digest") == "" {
		q.Set("digest", dg.String())
	}
	if platform == "" {
		platform = "linux/amd64"
	}
	q.Set("platform", platform)
	var sb strings.Builder
	sb.WriteString("pkg:docker/")
	sb.WriteString(n)
	if version != "" {
		sb.WriteString("@")
		sb.WriteString(version)
	}
	sb.WriteString("?")
	sb.WriteString(q.Encode())
	return sb.String()
}

// The JSON shapes: in-toto Statement v1 and SLSA provenance v1, with
// kiln's buildType parameters. Field names are the specifications'.

type statement struct {
	Type          string               `json:"_type"`
	Subject       []resourceDescriptor `json:"subject"`
	PredicateType string               `json:"predicateType"`
	Predicate     provenancePredicate  `json:"predicate"`
}

type resourceDescriptor struct {
	Name   string            `json:"name,omitempty"`
	URI    string            `json:"uri,omitempty"`
	Digest map[string]string `json:"digest,omitempty"`
}

type provenancePredicate struct {
	BuildDefinition buildDefinition `json:"buildDefinition"`
	RunDetails      runDetails      `json:"runDetails"`
}

type buildDefinition struct {
	BuildType            string               `json:"buildType"`
	ExternalParameters   externalParameters   `json:"externalParameters"`
	InternalParameters   internalParameters   `json:"internalParameters"`
	ResolvedDependencies []resourceDescriptor `json:"resolvedDependencies,omitempty"`
}

type externalParameters struct {
	ConfigSource configSource `json:"configSource"`
	Request      request      `json:"request"`
	// Dockerfile is the Dockerfile's text, in max mode.
	Dockerfile string `json:"dockerfile,omitempty"`
}

type configSource struct {
	Path   string            `json:"path,omitempty"`
	Digest map[string]string `json:"digest,omitempty"`
}

type request struct {
	Frontend string            `json:"frontend"`
	Args     map[string]string `json:"args,omitempty"`
	Secrets  []secret          `json:"secrets,omitempty"`
	Locals   []local           `json:"locals,omitempty"`
}

type secret struct {
	ID string `json:"id"`
}

type local struct {
	Name string `json:"name"`
}

type internalParameters struct {
	BuilderPlatform string `json:"builderPlatform"`
}

type runDetails struct {
	Builder  builder  `json:"builder"`
	Metadata metadata `json:"metadata"`
}

type builder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

type metadata struct {
	InvocationID string     `json:"invocationId,omitempty"`
	StartedOn    *time.Time `json:"startedOn,omitempty"`
	FinishedOn   *time.Time `json:"finishedOn,omitempty"`
	// Extension fields, named by URI as SLSA asks.
	Completeness *completeness `json:"https://github.com/kiln-build/kiln#completeness,omitempty"`
}

type completeness struct {
	// Request is false in min mode when build args, labels or secrets
	// were left out.
	Request bool `json:"request"`
	// ResolvedDependencies is always false: the context is a local
	// directory, whose files (even in a git checkout, which may hold
	// uncommitted changes) cannot be fetched again by a digest.
	ResolvedDependencies bool `json:"resolvedDependencies"`
}
