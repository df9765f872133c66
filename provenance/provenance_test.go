package provenance

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    Request
		wantErr string
	}{
		{in: "", want: Request{}},
		{in: "true", want: Request{Set: true, Mode: Min}},
		{in: "1", want: Request{Set: true, Mode: Min}},
		{in: "false", want: Request{Set: true, Disabled: true, Mode: Min}},
		{in: "min", want: Request{Set: true, Mode: Min}},
		{in: "max", want: Request{Set: true, Mode: Max}},
		{in: "mode=max", want: Request{Set: true, Mode: Max}},
		{in: "mode=full", want: Request{Set: true, Mode: Max}},
		{in: "mode=min,builder-id=https://ci.example/run/7,version=v1", want: Request{Set: true, Mode: Min, BuilderID: "https://ci.example/run/7"}},
		{in: "mode=mid", wantErr: "want min or max"},
		{in: "version=v0.2", wantErr: "SLSA provenance v1 only"},
		{in: "colour=red", wantErr: `unknown key "colour"`},
		{in: "sometimes", wantErr: "want true, false"},
		{in: "type=sbom", wantErr: "belongs to --attest"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFlag(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseAttest(t *testing.T) {
	tests := []struct {
		in      string
		want    Request
		wantErr string
	}{
		{in: "type=provenance", want: Request{Set: true, Mode: Min}},
		{in: "type=provenance,mode=max", want: Request{Set: true, Mode: Max}},
		{in: "type=provenance,disabled=true", want: Request{Set: true, Mode: Min, Disabled: true}},
		{in: "mode=max", wantErr: "missing type=provenance"},
		{in: "type=sbom", wantErr: "does not generate SBOMs"},
		{in: "type=vex", wantErr: `unknown attestation type "vex"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAttest(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name     string
		req      Request
		push     bool
		wantOn   bool
		wantMode Mode
	}{
		{"unset, push: min as buildx", Request{}, true, true, Min},
		{"unset, file output: none", Request{}, false, false, ""},
		{"max on a file output", Request{Set: true, Mode: Max}, false, true, Max},
		{"false on a push", Request{Set: true, Disabled: true}, true, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, on := tt.req.Resolve(tt.push)
			if on != tt.wantOn || m != tt.wantMode {
				t.Errorf("Resolve(%v) = %q, %v; want %q, %v", tt.push, m, on, tt.wantMode, tt.wantOn)
			}
		})
	}
	if got := Merge(Request{Set: true, Mode: Max}, Request{}, Request{Set: true, Disabled: true}); !got.Disabled {
		t.Errorf("Merge: the last flag given must win, got %+v", got)
	}
}

func TestBuilderIDFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, ""},
		{map[string]string{"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42"}, "https://github.com/o/r/actions/runs/42"},
		{map[string]string{"GITHUB_SERVER_URL": "https://github.com/", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "3"}, "https://github.com/o/r/actions/runs/42/attempts/3"},
		{map[string]string{"CI_JOB_URL": "https://gitlab.example/o/r/-/jobs/9"}, "https://gitlab.example/o/r/-/jobs/9"},
	}
	for _, tt := range tests {
		if got := BuilderIDFromEnv(env(tt.env)); got != tt.want {
			t.Errorf("BuilderIDFromEnv(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestPurl(t *testing.T) {
	dg := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	tests := []struct{ ref, want string }{
		{"alpine:3.17", "pkg:docker/alpine@3.17?platform=linux%2Famd64"},
		{"busybox", "pkg:docker/busybox@latest?platform=linux%2Famd64"},
		{"ghcr.io/o/app:1", "pkg:docker/ghcr.io/o/app@1?platform=linux%2Famd64"},
		{"127.0.0.1:5000/library/busybox:latest", "pkg:docker/127.0.0.1:5000/library/busybox@latest?platform=linux%2Famd64"},
		{"alpine@" + dg.String(), "pkg:docker/alpine?digest=sha256%3A" + dg.Hex + "&platform=linux%2Famd64"},
		{"Not A Ref", ""},
	}
	for _, tt := range tests {
		if got := purl(tt.ref, dg, ""); got != tt.want {
			t.Errorf("purl(%q) = %q, want %q", tt.ref, got, tt.want)
		}
	}
}

// TestStatementModes checks what min leaves out and max keeps, as
// BuildKit's modes do.
func TestStatementModes(t *testing.T) {
	dg := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("12", 32)}
	base := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("34", 32)}
	b := Build{
		DockerfilePath: "build/Dockerfile",
		Dockerfile:     []byte("FROM busybox\nARG TOKEN_NAME\n"),
		Target:         "release",
		BuildArgs:      map[string]string{"TOKEN_NAME": "deploy"},
		Labels:         map[string]string{"team": "infra"},
		SecretIDs:      []string{"npmrc"},
		Bases:          []Base{{Ref: "busybox", Digest: base}, {Ref: "busybox", Digest: base}},
		Git:            &Git{Commit: strings.Repeat("c", 40), Ref: "refs/heads/main", Remote: "https://example.com/r.git"},
		InvocationID:   "inv1",
		Started:        time.Unix(1700000000, 0),
		Finished:       time.Unix(1700000060, 0),
	}
	for _, m := range []Mode{Min, Max} {
		t.Run(string(m), func(t *testing.T) {
			raw, err := Statement(b, m, []Subject{{Name: SubjectName("r.example/app:1"), Digest: dg}})
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				Type      string `json:"_type"`
				Subject   []resourceDescriptor
				Predicate provenancePredicate
			}
			if err := json.Unmarshal(raw, &st); err != nil {
				t.Fatal(err)
			}
			p := st.Predicate
			if st.Type != StatementType || len(st.Subject) != 1 || st.Subject[0].Digest["sha256"] != dg.Hex ||
				st.Subject[0].Name != "pkg:docker/r.example/app@1?platform=linux%2Famd64" {
				t.Errorf("statement head: %+v", st)
			}
			ext := p.BuildDefinition.ExternalParameters
			if ext.ConfigSource.Path != "build/Dockerfile" || len(ext.ConfigSource.Digest["sha256"]) != 64 {
				t.Errorf("configSource %+v", ext.ConfigSource)
			}
			if ext.Request.Frontend != "dockerfile" || ext.Request.Args["target"] != "release" {
				t.Errorf("request %+v", ext.Request)
			}
			hasArg := ext.Request.Args["build-arg:TOKEN_NAME"] == "deploy"
			hasLabel := ext.Request.Args["label:team"] == "infra"
			hasText := ext.Dockerfile == string(b.Dockerfile)
			hasSecret := len(ext.Request.Secrets) == 1 && ext.Request.Secrets[0].ID == "npmrc"
			want := m == Max
			if hasArg != want || hasLabel != want || hasText != want || hasSecret != want {
				t.Errorf("%s: build arg %v, label %v, Dockerfile text %v, secret id %v; want all %v", m, hasArg, hasLabel, hasText, hasSecret, want)
			}
			if p.RunDetails.Metadata.Completeness.Request != want {
				t.Errorf("%s: completeness.request %v", m, p.RunDetails.Metadata.Completeness.Request)
			}
			deps := p.BuildDefinition.ResolvedDependencies
			if len(deps) != 2 || deps[0].Digest["sha256"] != base.Hex || deps[1].Digest["sha1"] != b.Git.Commit ||
				deps[1].URI != "https://example.com/r.git#refs/heads/main" {
				t.Errorf("resolvedDependencies %+v", deps)
			}
			if p.RunDetails.Builder.ID != DefaultBuilderID || p.RunDetails.Metadata.InvocationID != "inv1" ||
				!p.RunDetails.Metadata.StartedOn.Equal(b.Started) || !p.RunDetails.Metadata.FinishedOn.Equal(b.Finished) {
				t.Errorf("runDetails %+v", p.RunDetails)
			}
		})
	}
	if _, err := Statement(b, "full", []Subject{{Name: "_", Digest: dg}}); err == nil {
		t.Error("an unknown mode was accepted")
	}
	if _, err := Statement(b, Min, nil); err == nil {
		t.Error("a statement with no subject was written")
	}
}

func TestCleanRemote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://github.com/o/r.git", "https://github.com/o/r.git"},
		{"https://x-access-token:ghs_secret@github.com/o/r.git", "https://github.com/o/r.git"},
		{"git@github.com:o/r.git", "github.com:o/r.git"},
		{"ssh://git@host:22/o/r", "ssh://host:22/o/r"},
		{"/srv/git/r.git", "/srv/git/r.git"},
		{"https://h/r\nevil", ""},
	}
	for _, tt := range tests {
		if got := cleanRemote(tt.in); got != tt.want {
			t.Errorf("cleanRemote(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
