package lint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// images stands in for a registry: the config of each base image the
// tests name.
func images(_ context.Context, ref string, _ ocispecs.Platform) (*Image, error) {
	switch ref {
	case "busybox", "busybox:latest", "golang:1.22":
		img := &Image{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}, Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"}}
		if ref == "golang:1.22" {
			img.Env = append(img.Env, "GOPATH=/go", "GOLANG_VERSION=1.22")
		}
		return img, nil
	case "arm64only":
		return &Image{Platform: ocispecs.Platform{OS: "linux", Architecture: "arm64"}}, nil
	case "powershell":
		return &Image{Shell: []string{"pwsh", "-c"}, Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"}}, nil
	}
	return nil, errors.New("not found")
}

// found is "Rule:line" for each warning, in the order they were raised.
func found(ws []Warning) string {
	var out []string
	for _, w := range ws {
		out = append(out, fmt.Sprintf("%s:%d", w.Rule, w.Line()))
	}
	return strings.Join(out, " ")
}

// Each rule BuildKit v0.34 checks, with a Dockerfile that breaks it and
// the rule and line `docker buildx build --check` reports for it.
func TestRules(t *testing.T) {
	tests := []struct {
		name   string
		df     string
		opt    Options
		want   string
		detail string // the message of the first warning, when checked
	}{
		{name: "clean", df: "FROM busybox\nRUN echo hi\nCMD [\"sh\"]\n", want: ""},
		{name: "StageNameCasing", df: "FROM busybox AS Build\nRUN true\n", want: "StageNameCasing:1",
			detail: "Stage name 'Build' should be lowercase"},
		{name: "FromAsCasing", df: "FROM busybox as build\nRUN true\n", want: "FromAsCasing:1",
			detail: "'as' and 'FROM' keywords' casing do not match"},
		{name: "NoEmptyContinuation", df: "FROM busybox\nRUN echo a && \\\n\n  echo b\n", want: "NoEmptyContinuation:4",
			detail: "Empty continuation line"},
		{name: "ConsistentInstructionCasing", df: "FROM busybox\nrun echo a\nRUN echo b\nRUN echo c\n", want: "ConsistentInstructionCasing:2",
			detail: "Command 'run' should match the case of the command majority (uppercase)"},
		{name: "DuplicateStageName", df: "FROM busybox AS a\nFROM busybox AS a\n", want: "DuplicateStageName:2",
			detail: `Duplicate stage name "a", stage names should be unique`},
		{name: "ReservedStageName", df: "FROM busybox AS scratch\n", want: "ReservedStageName:1",
			detail: `Stage name should not use the same name as reserved stage "scratch"`},
		{name: "JSONArgsRecommended", df: "FROM busybox\nCMD echo hi\n", want: "JSONArgsRecommended:2",
			detail: "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"},
		{name: "JSONArgsRecommended entrypoint", df: "FROM busybox\nENTRYPOINT echo hi\n", want: "JSONArgsRecommended:2"},
		{name: "JSONArgsRecommended not with SHELL", df: "FROM busybox\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\n", want: ""},
		{name: "JSONArgsRecommended not with an image shell", df: "FROM powershell\nCMD echo hi\n", want: ""},
		{name: "MaintainerDeprecated", df: "FROM busybox\nMAINTAINER me <me@example.com>\n", want: "MaintainerDeprecated:2",
			detail: "Maintainer instruction is deprecated in favor of using label"},
		{name: "UndefinedArgInFrom", df: "FROM busybox${SUFFIX}\n", want: "UndefinedArgInFrom:1",
			detail: "FROM argument 'SUFFIX' is not declared"},
		{name: "UndefinedArgInFrom suggests", df: "ARG VERSION=latest\nFROM busybox${VERSIN}\n", want: "UndefinedArgInFrom:2",
			detail: "FROM argument 'VERSIN' is not declared (did you mean VERSION?)"},
		{name: "WorkdirRelativePath", df: "FROM busybox\nWORKDIR app\nWORKDIR sub\n", want: "WorkdirRelativePath:2",
			detail: "Relative workdir \"app\" can have unexpected results if the base image changes"},
		{name: "WorkdirRelativePath after absolute", df: "FROM busybox\nWORKDIR /app\nWORKDIR sub\n", want: ""},
		{name: "UndefinedVar", df: "FROM busybox\nCOPY $SRC /x\n", want: "UndefinedVar:2",
			detail: "Usage of undefined variable '$SRC'"},
		{name: "UndefinedVar suggests", df: "FROM golang:1.22\nENV DIR=$GOPAHT\n", want: "UndefinedVar:2",
			detail: "Usage of undefined variable '$GOPAHT' (did you mean $GOPATH?)"},
		{name: "UndefinedVar image env", df: "FROM golang:1.22\nENV DIR=$GOPATH\nWORKDIR $DIR\n", want: ""},
		{name: "UndefinedVar declared ARG", df: "FROM busybox\nARG V\nENV X=$V\n", want: ""},
		{name: "UndefinedVar not in RUN", df: "FROM busybox\nRUN echo $NOPE\n", want: ""},
		{name: "UndefinedVar inherited from stage", df: "FROM busybox AS a\nENV A=1\nFROM a\nENV B=$A\n", want: ""},
		{name: "UndefinedVar unknown base is not judged", df: "FROM unknown\nENV B=$A\n", want: ""},
		{name: "MultipleInstructionsDisallowed", df: "FROM busybox\nCMD [\"a\"]\nCMD [\"b\"]\n", want: "MultipleInstructionsDisallowed:2",
			detail: "Multiple CMD instructions should not be used in the same stage because only the last one will be used"},
		{name: "MultipleInstructionsDisallowed healthcheck", df: "FROM busybox\nHEALTHCHECK NONE\nHEALTHCHECK NONE\n", want: "MultipleInstructionsDisallowed:2"},
		{name: "LegacyKeyValueFormat", df: "FROM busybox\nENV A 1\n", want: "LegacyKeyValueFormat:2",
			detail: "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"},
		{name: "LegacyKeyValueFormat label", df: "FROM busybox\nLABEL a b\n", want: "LegacyKeyValueFormat:2"},
		{name: "InvalidBaseImagePlatform", df: "FROM arm64only\nRUN true\n", want: "InvalidBaseImagePlatform:1",
			opt:    Options{ExplicitPlatform: true},
			detail: "Base image arm64only was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build"},
		{name: "InvalidBaseImagePlatform build platform image", df: "FROM busybox\n", want: "",
			opt: Options{Platform: &ocispecs.Platform{OS: "linux", Architecture: "arm64"}}},
		{name: "RedundantTargetPlatform", df: "FROM --platform=$TARGETPLATFORM busybox\n", want: "RedundantTargetPlatform:1",
			detail: "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"},
		{name: "SecretsUsedInArgOrEnv", df: "FROM busybox\nARG API_TOKEN\nENV DB_PASSWORD=x\nENV PUBLIC_KEY=y\n", want: "SecretsUsedInArgOrEnv:2 SecretsUsedInArgOrEnv:3",
			detail: "Do not use ARG or ENV instructions for sensitive data (ARG \"API_TOKEN\")"},
		{name: "InvalidDefaultArgInFrom", df: "ARG TAG\nFROM busybox:${TAG}\n", want: "InvalidDefaultArgInFrom:2",
			opt:    Options{BuildArgs: map[string]string{"TAG": "latest"}},
			detail: "Default value for ARG busybox:${TAG} results in empty or invalid base image name"},
		{name: "FromPlatformFlagConstDisallowed", df: "FROM --platform=linux/amd64 busybox AS build\n", want: "FromPlatformFlagConstDisallowed:1",
			detail: "FROM --platform flag should not use constant value \"linux/amd64\""},
		{name: "FromPlatformFlagConstDisallowed named for it", df: "FROM --platform=linux/amd64 busybox AS build-amd64\n", want: ""},
		{name: "CopyIgnoredFile", df: "FROM busybox\nCOPY secret.txt /x\nADD ./logs/a.log /y\nCOPY --from=busybox secret.txt /z\n", want: "CopyIgnoredFile:2 CopyIgnoredFile:3",
			opt:    Options{Ignore: []string{"secret.txt", "logs"}},
			detail: "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore"},
		{name: "CopyIgnoredFile not with exclusions", df: "FROM busybox\nCOPY secret.txt /x\n", want: "",
			opt: Options{Ignore: []string{"*.txt", "!keep.txt"}}},
		{name: "ExposeProtoCasing", df: "FROM busybox\nEXPOSE 80/TCP\n", want: "ExposeProtoCasing:2",
			detail: "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase"},
		{name: "ExposeInvalidFormat", df: "FROM busybox\nEXPOSE 127.0.0.1:80:80\n", want: "ExposeInvalidFormat:2",
			detail: "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"},
		{name: "InvalidDefinitionDescription is experimental", df: "# check=experimental=InvalidDefinitionDescription\nFROM busybox\n# this is the wrong comment\nARG A=1\n", want: "InvalidDefinitionDescription:4"},
		{name: "skip", df: "# check=skip=JSONArgsRecommended,StageNameCasing\nFROM busybox AS Build\nCMD echo hi\nENV A 1\n", want: "LegacyKeyValueFormat:4"},
		{name: "skip all", df: "# check=skip=all\nFROM busybox AS Build\nCMD echo hi\n", want: ""},
		{name: "build arg replaces the directive", df: "# check=skip=all\nFROM busybox\nCMD echo hi\n", want: "JSONArgsRecommended:3",
			opt: Options{BuildArgs: map[string]string{"BUILDKIT_DOCKERFILE_CHECK": "skip=StageNameCasing"}}},
		{name: "unreachable stage is not dispatched", df: "FROM busybox AS unused\nCMD echo a\nFROM busybox\nCMD [\"b\"]\n", want: ""},
		{name: "all stages with --check", df: "FROM busybox AS unused\nCMD echo a\nFROM busybox\nCMD [\"b\"]\n", want: "JSONArgsRecommended:2",
			opt: Options{AllStages: true}},
		{name: "copy --from makes a stage reachable", df: "FROM busybox AS dep\nCMD echo a\nFROM busybox\nCOPY --from=dep /x /x\n", want: "JSONArgsRecommended:2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := tt.opt
			opt.BaseImage = images
			res, err := Run(context.Background(), []byte(tt.df), opt)
			if err != nil {
				t.Fatal(err)
			}
			if got := found(res.Warnings); got != tt.want {
				t.Errorf("found %q, want %q", got, tt.want)
			}
			if tt.detail != "" && len(res.Warnings) > 0 && res.Warnings[0].Detail != tt.detail {
				t.Errorf("message %q, want %q", res.Warnings[0].Detail, tt.detail)
			}
			for _, w := range res.Warnings {
				if !strings.HasPrefix(w.URL, "https://docs.docker.com/go/dockerfile/rule/") && w.Rule != "InvalidBaseImagePlatform" || w.Description == "" {
					t.Errorf("%s: URL %q, description %q", w.Rule, w.URL, w.Description)
				}
			}
			if res.Err != nil {
				t.Errorf("error %v without error=true", res.Err)
			}
		})
	}
}

func TestErrorDirective(t *testing.T) {
	tests := []struct {
		df      string
		args    map[string]string
		wantErr string
	}{
		{df: "# check=error=true\nFROM busybox\nCMD echo hi\n", wantErr: "lint violation found for rules: JSONArgsRecommended"},
		{df: "# check=error=true\nFROM busybox\nCMD [\"hi\"]\n"},
		{df: "# check=skip=JSONArgsRecommended;error=true\nFROM busybox\nCMD echo hi\n"},
		{df: "FROM busybox\nCMD echo hi\n", args: map[string]string{"BUILDKIT_DOCKERFILE_CHECK": "error=true"}, wantErr: "JSONArgsRecommended"},
	}
	for _, tt := range tests {
		res, err := Run(context.Background(), []byte(tt.df), Options{BaseImage: images, BuildArgs: tt.args})
		if err != nil {
			t.Fatal(err)
		}
		if tt.wantErr == "" && res.Err != nil || tt.wantErr != "" && (res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantErr)) {
			t.Errorf("%q: error %v, want %q", tt.df, res.Err, tt.wantErr)
		}
	}
	for _, bad := range []string{"# check=error=maybe\nFROM busybox\n", "# check=nope\nFROM busybox\n"} {
		if _, err := Run(context.Background(), []byte(bad), Options{}); err == nil || !strings.Contains(err.Error(), "want skip=") {
			t.Errorf("%q: error %v, want one saying what is accepted", bad, err)
		}
	}
}
