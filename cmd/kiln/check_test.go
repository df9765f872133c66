package main

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// A Dockerfile that breaks three of BuildKit's rules, and one RUN that
// would fail: --check must not run it.
const lintDockerfile = `FROM REGISTRY/library/busybox:latest AS Base
ENV GREETING hello
RUN exit 3
CMD echo $GREETING
`

// checkRanStep is a plain progress line: a step ran.
var checkRanStep = regexp.MustCompile(`(?m)^#\d+ `)

// TestCheck runs kiln build --check / --call=check and compares what it
// prints with what docker buildx build --check prints for the same file.
func TestCheck(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	withWarnings := progressContext(t, reg, lintDockerfile)
	clean := progressContext(t, reg, "FROM REGISTRY/library/busybox:latest\nCMD [\"true\"]\n")
	asError := progressContext(t, reg, "# check=error=true\n"+lintDockerfile)
	skipped := progressContext(t, reg, "# check=skip=StageNameCasing,LegacyKeyValueFormat,JSONArgsRecommended\n"+lintDockerfile)
	ignored := progressContext(t, reg, "FROM REGISTRY/library/busybox:latest\nCOPY greeting.txt /\n", ".dockerignore", "*.txt\n")
	otherFrontend := progressContext(t, reg, "# syntax=example.com/frontend:1\nFROM scratch\n")

	const wantWarnings = `Check complete, 3 warnings have been found!

WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/
Stage name 'Base' should be lowercase
Dockerfile:1
--------------------
   1 | >>> FROM REGISTRY/library/busybox:latest AS Base
   2 |     ENV GREETING hello
   3 |     RUN exit 3
--------------------

WARNING: LegacyKeyValueFormat - https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/
"ENV key=value" should be used instead of legacy "ENV key value" format
Dockerfile:2
--------------------
   1 |     FROM REGISTRY/library/busybox:latest AS Base
   2 | >>> ENV GREETING hello
   3 |     RUN exit 3
   4 |     CMD echo $GREETING
--------------------

WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/
JSON arguments recommended for CMD to prevent unintended behavior related to OS signals
Dockerfile:4
--------------------
   2 |     ENV GREETING hello
   3 |     RUN exit 3
   4 | >>> CMD echo $GREETING
   5 |     
--------------------
`
	tests := []struct {
		name     string
		ctx      string
		args     []string
		wantCode int
		want     string // the whole output, or a part of it with contains
		contains bool
	}{
		{"warnings", withWarnings, []string{"--check"}, 1, wantWarnings, false},
		{"call=check", withWarnings, []string{"--call=check"}, 1, wantWarnings, false},
		{"no warnings", clean, []string{"--check"}, 0, "Check complete, no warnings found.\n", false},
		{"skipped rules", skipped, []string{"--check"}, 0, "Check complete, no warnings found.\n", false},
		{"build arg skips all", withWarnings, []string{"--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"}, 0, "Check complete, no warnings found.\n", false},
		{"error=true", asError, []string{"--check"}, 1, "ERROR: lint violation found for rules: ", true},
		{"ignored file", ignored, []string{"--check"}, 1, "WARNING: CopyIgnoredFile - https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/\nAttempting to Copy file \"greeting.txt\" that is excluded by .dockerignore\n", true},
		{"other frontend", otherFrontend, []string{"--check"}, 1, "Dockerfile:1: syntax \"example.com/frontend:1\"", true},
		{"call=outline refused", clean, []string{"--call=outline"}, exitUsage, "--call outline: kiln runs build (the default) or check", true},
		{"check with call=build", clean, []string{"--check", "--call=build"}, 0, "Check complete, no warnings found.\n", false},
		{"check with another call", clean, []string{"--check", "--call=targets"}, exitUsage, "--call targets", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build", "--root", root}, tt.args...)
			out, code := kiln(t, append(args, tt.ctx)...)
			out = strings.ReplaceAll(out, reg, "REGISTRY")
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d:\n%s", code, tt.wantCode, out)
			}
			if tt.contains && !strings.Contains(out, tt.want) || !tt.contains && out != tt.want {
				t.Errorf("output:\n%s\nwant (contains=%v):\n%s", out, tt.contains, tt.want)
			}
			if checkRanStep.MatchString(out) {
				t.Errorf("--check ran a step:\n%s", out)
			}
		})
	}
}

// TestBuildLintSummary: a build lists the warnings after its summary, as
// buildx does, and # check=error=true fails it before any step runs.
func TestBuildLintSummary(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	df := "FROM REGISTRY/library/busybox:latest\nRUN echo ran the step\nCMD echo hi\nENV A 1\n"
	warned := progressContext(t, reg, df)
	failing := progressContext(t, reg, "# check=error=true\n"+df)

	out, code := kiln(t, "build", "--root", root, "--progress=plain", warned)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	const summary = `
 2 warnings found (use kiln build --check to expand):
 - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)
 - LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format (line 4)
`
	if !strings.HasSuffix(out, summary) {
		t.Errorf("build output does not end with the warnings:\n%s", out)
	}

	out, code = kiln(t, "build", "--root", root, "--progress=plain", "-q", warned)
	if code != 0 || strings.Contains(out, "warning") {
		t.Errorf("quiet build: exit %d, output:\n%s", code, out)
	}

	out, code = kiln(t, "build", "--root", root, "--progress=plain", "--no-cache", failing)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d:\n%s", code, exitFailed, out)
	}
	if strings.Contains(out, "ran the step") {
		t.Errorf("a step ran although the lint failed the build:\n%s", out)
	}
	for _, want := range []string{"lint violation found for rules:", "JSONArgsRecommended", "LegacyKeyValueFormat", "# check=skip=RULE"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestStepTitlesAsWritten: plain progress titles a step with its line as
// written (BuildKit's), not a re-expanded form; a # syntax line naming
// the Dockerfile frontend on a mirror, labs channel, builds.
func TestStepTitlesAsWritten(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	df := `# syntax=mirror.gcr.io/docker/dockerfile:1.9-labs
FROM REGISTRY/library/busybox:latest
ARG WHO=world
RUN for i in 1 2 3; do echo line $i; done
RUN perl -e 'print "hi\n"' 2>/dev/null || echo "no perl, $WHO"
COPY greeting.txt /srv/$WHO/
`
	ctx := progressContext(t, reg, df)
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", ctx)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{
		"[2/4] RUN for i in 1 2 3; do echo line $i; done\n",
		`[3/4] RUN perl -e 'print "hi\n"' 2>/dev/null || echo "no perl, world"` + "\n",
		"[4/4] COPY greeting.txt /srv/world/\n",
		"line 2\n",
		"no perl, world\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
}

func TestCallMode(t *testing.T) {
	tests := []struct {
		call    string
		check   bool
		want    string
		wantErr string
	}{
		{call: "build", want: "build"},
		{call: "check", want: "check"},
		{call: "build", check: true, want: "check"},
		{call: "check", check: true, want: "check"},
		{call: "outline", wantErr: "--call outline"},
		{call: "targets", check: true, wantErr: "--call targets"},
		{call: "check,format=json", wantErr: "--call check,format=json"},
	}
	for _, tt := range tests {
		got, err := callMode(tt.call, tt.check)
		var ue *usageError
		if tt.wantErr != "" {
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("callMode(%q, %v) error %v, want a usage error naming %q", tt.call, tt.check, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("callMode(%q, %v) = %q, %v; want %q", tt.call, tt.check, got, err, tt.want)
		}
	}
}
