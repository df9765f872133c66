package main

import (
	"context"
	"fmt"
	"github.com/containerd/platforms"
	"io"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-build/kiln/lint"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/trace"
)

// callMode reads --call (buildx's spelling) and --check, its alias:
// "build" (the default) or "check".
func callMode(call string, check bool) (string, error) {
	name, opts, _ := strings.Cut(call, ",")
	if opts != "" {
		return "", usagef("--call %s: kiln takes no options after the function (%s); use --call=%s", call, opts, name)
	}
	switch name {
	case "build", "check":
	default:
		return "", usagef("--call %s: kiln runs build (the default) or check (lint the Dockerfile); outline and targets are not supported", call)
	}
	if check && name != "check" && call != "build" {
		return "", usagef("--check is --call=check: drop --call=%s", call)
	}
	if check {
		return "check", nil
	}
	return name, nil
}

// runCheck is `kiln build --check`: BuildKit's lint rules, printed as
// `docker buildx build --check` prints them, and nothing built. It exits 1
// when there is a warning, as buildx does.
func runCheck(ctx context.Context, stdout io.Writer, root, contextDir, dfPath, dfName string, src []byte, f buildFlags, buildArgs map[string]string) error {
	if err := parser.CheckSyntax(dfName, src); err != nil {
		return err
	}
	excludes, err := readDockerignore(contextDir, dfPath)
	if err != nil {
		return err
	}
	resolver, err := f.registry.resolver()
	if err != nil {
		return err
	}
	store, err := storeOpen(root)
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := lint.Run(ctx, src, lint.Options{
		Name:             dfName,
		BuildArgs:        buildArgs,
		Target:           f.target,
		AllStages:        f.target == "", // as buildx: no target, every stage
		Ignore:           excludes,
		BaseImage:        baseImages(ctx, imageResolver(store, resolver, f.pull)),
		ExplicitPlatform: f.platform != "",
	})
	if err != nil {
		return parser.At(dfName, nil, err)
	}
	lint.PrintCheck(stdout, dfName, src, res.Warnings)
	if res.Err != nil {
		if len(res.Warnings) > 0 {
			fmt.Fprintln(stdout) // buildx sets the error apart from the warnings
		}
		return fmt.Errorf("%w (fix them, or list them in # check=skip=… to accept them)", res.Err)
	}
	if len(res.Warnings) > 0 {
		return &exitStatus{code: exitFailed}
	}
	return nil
}

// lintBuild checks the Dockerfile before a build, as BuildKit does while
// converting it: only the stages the build needs. The warnings are listed
// after the build's summary; with # check=error=true they fail the build
// before any step runs.
func lintBuild(ctx context.Context, src []byte, df *parser.Dockerfile, target string, explicitPlatform bool, buildArgs map[string]string, excludes []string, images planner.ImageResolver) ([]lint.Warning, error) {
	// Base images are resolved under the build, not the lint: the build
	// shares them (and fetches their layers through them) after the lint
	// has ended.
	outer := ctx
	ctx, span := trace.Start(ctx, "lint")
	defer span.End()
	res, err := lint.Run(ctx, src, lint.Options{
		Name:             df.Name,
		BuildArgs:        buildArgs,
		Target:           target,
		Ignore:           excludes,
		BaseImage:        baseImages(outer, images),
		ExplicitPlatform: explicitPlatform,
	})
	if err != nil {
		return nil, parser.At(df.Name, nil, err)
	}
	if res.Err != nil {
		return res.Warnings, fmt.Errorf("%s: %w (# check=error=true makes warnings errors: fix them, see them with kiln build --check, or skip a rule with # check=skip=RULE)", df.Name, res.Err)
	}
	return res.Warnings, nil
}

// printLintSummary lists the build's lint warnings under its progress, as
// buildx does; not in quiet or rawjson mode, whose output is read by
// programs.
func printLintSummary(w io.Writer, mode string, warnings []lint.Warning) {
	if mode == "quiet" || mode == "rawjson" {
		return
	}
	lint.PrintSummary(w, warnings)
}

// baseImages gives the lint rules the config of a base image through the
// build's own resolver (kiln's store, then the registry).
func baseImages(ctx context.Context, r planner.ImageResolver) lint.BaseImageFunc {
	return func(_ context.Context, ref string, p ocispecs.Platform) (*lint.Image, error) {
		img, _, err := r.ResolvePlatform(ctx, ref, p)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		return &lint.Image{
			Env:      cf.Config.Env,
			Shell:    cf.Config.Shell,
			Platform: ocispecs.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}, nil
	}
}

// memoResolver resolves each name once per build: the lint rules and the
// build ask for the same base images.
type memoResolver struct {
	next planner.ImageResolver
	mu   sync.Mutex
	seen map[string]*memoEntry
}

type memoEntry struct {
	once sync.Once
	img  v1.Image
	name string
	err  error
}

func memoize(r planner.ImageResolver) *memoResolver {
	return &memoResolver{next: r, seen: map[string]*memoEntry{}}
}

func (m *memoResolver) ResolvePlatform(ctx context.Context, ref string, p ocispecs.Platform) (v1.Image, string, error) {
	key := ref + "\x00" + platforms.Format(p)
	m.mu.Lock()
	e, ok := m.seen[key]
	if !ok {
		e = &memoEntry{}
		m.seen[key] = e
	}
	m.mu.Unlock()
	e.once.Do(func() { e.img, e.name, e.err = m.next.ResolvePlatform(ctx, ref, p) })
	return e.img, e.name, e.err
}
