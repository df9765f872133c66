// Package lint checks a Dockerfile with BuildKit's own rules (the
// frontend/dockerfile/linter rule set): the same rule names, messages,
// documentation URLs and lines that `docker buildx build --check` reports.
//
// BuildKit evaluates a few rules while parsing (instructions.Parse runs
// them when handed a linter) and the rest while converting the Dockerfile
// to LLB. This package walks the stages the way that conversion does —
// meta ARGs, each stage's environment from its base image, ENV and ARG —
// without building anything, and calls the same rules at the same points,
// in the same order.
package lint

import (
	"bytes"
	"context"
	"fmt"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Warning is one finding of one rule.
type Warning struct {
	Rule        string // "UndefinedVar"
	Description string // the rule's one-line description
	URL         string // the rule's documentation page
	Detail      string // the message, as BuildKit formats it
	Location    []bkparser.Range
}

// Line is the first line the warning concerns, 0 when it has none.
func (w Warning) Line() int {
	if len(w.Location) == 0 {
		return 0
	}
	return w.Location[0].Start.Line
}

// Short is the one-line form a build's summary lists:
// "UndefinedVar: Usage of undefined variable '$X' (line 3)".
func (w Warning) Short() string {
	return linter.LintFormatShort(w.Rule, w.Detail, w.Line())
}

// Image is what the rules need to know of a base image.
type Image struct {
	Env      []string
	Shell    []string
	Platform ocispecs.Platform
}

// BaseImageFunc returns the config of image ref for platform. An error
// means the image is unknown: the checks that need it are skipped for
// its stage rather than guessed (the build reports the error itself).
type BaseImageFunc func(ctx context.Context, ref string, platform ocispecs.Platform) (*Image, error)

// Options describe what is checked.
type Options struct {
	Name      string            // the Dockerfile's name in messages
	BuildArgs map[string]string // --build-arg
	// Target is the stage being built ("" = the last one). With
	// AllStages every stage is checked, as --check does when no
	// --target is given.
	Target    string
	AllStages bool
	// Platform is the target platform and BuildPlatform the builder's
	// (both default to linux/amd64).
	Platform, BuildPlatform *ocispecs.Platform
	// ExplicitPlatform is true when the user asked for the target
	// platform (--platform): without it, a base image of the build
	// platform is taken as it is, not flagged as the wrong platform.
	ExplicitPlatform bool
	// Ignore holds the .dockerignore patterns, for CopyIgnoredFile.
	Ignore []string
	// BaseImage resolves FROM images; nil checks without them.
	BaseImage BaseImageFunc
}

// Result is what a check found.
type Result struct {
	Warnings []Warning
	// Err is set when the check configuration says warnings are errors
	// (# check=error=true) and there are warnings: the build must fail.
	Err error
}

// Run checks the Dockerfile src. A Dockerfile that does not parse is an
// error (with its location, from BuildKit's parser); a Dockerfile that
// only fails later in the build is checked as far as it goes.
func Run(ctx context.Context, src []byte, opt Options) (*Result, error) {
	cfg, err := config(src, opt.BuildArgs)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	cfg.Warn = func(rule, description, url, msg string, loc []bkparser.Range) {
		res.Warnings = append(res.Warnings, Warning{Rule: rule, Description: description, URL: url, Detail: msg, Location: loc})
	}
	l := linter.New(cfg)

	ast, err := bkparser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	for _, w := range ast.Warnings {
		// The parser's only warning is the empty continuation line; the
		// URL tells it from anything added later.
		if w.URL == linter.RuleNoEmptyContinuation.URL && w.Location != nil {
			l.Run(&linter.RuleNoEmptyContinuation, []bkparser.Range{*w.Location}, linter.RuleNoEmptyContinuation.Format())
		}
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, l)
	if err != nil {
		return nil, err
	}
	if len(stages) == 0 {
		return res, nil
	}
	var ignore *patternmatcher.PatternMatcher
	if len(opt.Ignore) > 0 {
		if ignore, err = patternmatcher.New(opt.Ignore); err != nil {
			return nil, fmt.Errorf("reading the .dockerignore patterns: %w", err)
		}
	}
	w := &walker{opt: opt, lint: l, escape: ast.EscapeToken, ignore: ignore}
	w.run(ctx, stages, metaArgs)
	res.Err = l.Error()
	return res, nil
}

// config is the rule configuration: the BUILDKIT_DOCKERFILE_CHECK build
// arg when set (it replaces the directive, as in BuildKit), else the
// Dockerfile's "# check=" directive.
func config(src []byte, buildArgs map[string]string) (*linter.Config, error) {
	if v, ok := buildArgs["BUILDKIT_DOCKERFILE_CHECK"]; ok {
		cfg, err := linter.ParseLintOptions(v)
		if err != nil {
			return nil, fmt.Errorf("--build-arg BUILDKIT_DOCKERFILE_CHECK=%s: %w (want skip=Rule1,Rule2|all;error=true|false)", v, err)
		}
		return cfg, nil
	}
	v, _, loc, _ := bkparser.ParseDirective("check", src)
	cfg, err := linter.ParseLintOptions(v)
	if err != nil {
		return nil, bkparser.WithLocation(fmt.Errorf("# check=%s: %w (want skip=Rule1,Rule2|all;error=true|false)", v, err), loc)
	}
	return cfg, nil
}

// BeforeBuild reports whether the check of src must be over before the
// build starts: when its configuration is wrong (the build is refused) or
// makes warnings errors (error=true fails the build before any step).
// Otherwise it can run beside the build, off its path.
func BeforeBuild(src []byte, buildArgs map[string]string) bool {
	cfg, err := config(src, buildArgs)
	return err != nil || cfg.ReturnAsError
}
