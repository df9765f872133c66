package main

import (
	"errors"
	"fmt"
	"github.com/kiln-build/kiln/lint"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/patternmatcher/ignorefile"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/image"
	"github.com/kiln-build/kiln/internal/features"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/sshforward"
	"github.com/kiln-build/kiln/trace"
)

type buildFlags struct {
	file, target, network, platform, iidfile, progress string
	tags, buildArgs, labels, outputs                   []string
	noCache, explainCache, quiet                       bool
	noCacheFilter, secrets                             []string
	ssh                                                []string
	onError                                            string
	trace                                              string // --trace FILE
	provenance                                         string
	attests                                            []string
	jobs                                               int
	pull                                               bool // --pull: see imageResolver
	load                                               bool // --load: outputs.go
	annotations                                        []string
	call                                               string // --call: build or check
	check                                              bool   // --check, = --call=check
	sandbox                                            func() (executor.Sandbox, error)
	registry                                           *registryOptions
	cache                                              *cacheFlags
	buildContexts                                      []string // --build-context NAME=VALUE
}

func newBuildCmd(root *string) *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build [flags] CONTEXT",
		Short: "Build an image from a Dockerfile",
		Example: `  # build ./Dockerfile and write an OCI archive
  kiln build -t app:1.0 -o type=oci,dest=app.tar .

  # a docker load tarball, with build args, for one stage
  kiln build -f build/Dockerfile --build-arg VERSION=1.4 --target runtime \
    -t registry.example.com/team/app:1.4 -o type=docker,dest=app.tar .

  # the final root filesystem as a directory
  kiln build -o type=local,dest=rootfs .`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("build takes exactly one CONTEXT argument (a directory, -, a git or an http(s) URL), got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if remoteHost(cmd) != "" {
				return runRemoteBuild(cmd, args[0], f)
			}
			return runBuild(cmd, *root, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "Dockerfile to build (default CONTEXT/Dockerfile; - reads stdin; a path inside the context when CONTEXT is - or a URL)")
	fl.StringArrayVarP(&f.tags, "tag", "t", nil, "name the image (repeatable)")
	fl.StringArrayVar(&f.buildArgs, "build-arg", nil, "set a build argument: K=V, or K to take it from the environment (repeatable)")
	fl.StringVar(&f.target, "target", "", "build this stage (default: the last one)")
	fl.BoolVar(&f.noCache, "no-cache", false, "do not reuse any step from the cache")
	fl.BoolVar(&f.pull, "pull", false, "resolve every image FROM, COPY --from and RUN --mount from= name in the registry, even if kiln's store has an image of that name")
	fl.StringArrayVar(&f.noCacheFilter, "no-cache-filter", nil, "do not reuse the steps of this stage (repeatable)")
	fl.BoolVar(&f.explainCache, "explain-cache", false, "for each step that runs, say which of its inputs changed since the last build")
	fl.StringArrayVar(&f.secrets, "secret", nil, "expose a secret to RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (repeatable)")
	fl.StringArrayVar(&f.ssh, "ssh", nil, "forward an ssh agent to RUN --mount=type=ssh: default (the agent at $SSH_AUTH_SOCK), ID=SOCKET or ID=KEYFILE[,KEYFILE] (repeatable)")
	fl.StringVar(&f.onError, "on-error", "fail", "what a failing RUN leaves: fail (nothing), or keep (its filesystem, for kiln debug)")
	fl.IntVar(&f.jobs, "jobs", 0, "steps of independent stages run at once (default: number of CPUs)")
	fl.StringArrayVar(&f.labels, "label", nil, "add a label K=V to the image (repeatable)")
	fl.StringVar(&f.network, "network", "default", "network of RUN steps: default (an isolated network of the build's, outbound only, through pasta or slirp4netns), none, or host (needs --allow network.host)")
	fl.StringVar(&f.platform, "platform", "", "target platforms, comma-separated (default: this machine's): linux/amd64,linux/arm64,linux/arm/v7…")
	fl.StringVar(&f.iidfile, "iidfile", "", "write the image ID (config digest) to this file")
	fl.StringVar(&f.progress, "progress", "auto", "progress output: auto (tty on a terminal, else plain), plain, tty, rawjson or quiet")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print only the image ID (--progress=quiet)")
	fl.StringArrayVarP(&f.outputs, "output", "o", nil, "export (repeatable): type=oci,dest=FILE | type=oci,dest=DIR,tar=false | type=docker,dest=FILE | type=local,dest=DIR | type=tar,dest=FILE | type=registry[,name=REF][,oci-mediatypes=false] | type=image,push=true")
	fl.StringArrayVar(&f.annotations, "annotation", nil, annotateFlagHelp)
	fl.BoolVar(&f.load, "load", false, "load the image into the Docker engine of DOCKER_HOST or /var/run/docker.sock (= -o type=docker)")
	fl.StringVar(&f.trace, "trace", "", "write a Chrome trace-event JSON of where the build's time went to this file (open it in ui.perfetto.dev or chrome://tracing)")
	fl.StringVar(&f.provenance, "provenance", "", "attach SLSA v1 provenance to oci and registry outputs: true (= mode=min), false, mode=min|max[,builder-id=URI] (default: min on pushes)")
	fl.StringArrayVar(&f.attests, "attest", nil, "attestation, buildx spelling: type=provenance[,mode=min|max][,disabled=true]")
	fl.StringVar(&f.call, "call", "build", "what to do: build, or check (run BuildKit's Dockerfile lint rules and build nothing; exit 1 on warnings)")
	fl.BoolVar(&f.check, "check", false, "shorthand for --call=check")
	fl.StringArrayVar(&f.buildContexts, "build-context", nil, "a named context NAME=VALUE for FROM NAME, COPY --from=NAME and RUN --mount from=NAME (repeatable): a directory, docker-image://REF, oci-layout://PATH[:TAG|@DIGEST], an https:// URL or a git URL")
	f.sandbox = addSandboxFlags(fl)
	f.registry = addRegistryFlags(fl)
	f.cache = addCacheFlags(fl)
	return cmd
}

func runBuild(cmd *cobra.Command, root, contextDir string, f buildFlags) (err error) {
	ctx := cmd.Context()
	started := time.Now()
	// what the error report quotes: the Dockerfile, the failing step's log
	var report buildError
	defer func() {
		if err != nil && (report.dockerfile != nil || report.display != nil) {
			report.err = err
			err = &report
		}
	}()
	if f.trace != "" {
		// Written on every path: a failed build's trace is the one that
		// says most.
		rec := trace.New()
		var sp *trace.Span
		ctx, sp = trace.Start(trace.With(ctx, rec), "build")
		defer func() {
			sp.SetError(err)
			sp.End()
			if werr := rec.WriteFile(f.trace); werr != nil && err == nil {
				err = fmt.Errorf("%w (check that --trace names a writable file)", werr)
			}
		}()
	}
	// Parsed first: a git context over ssh is fetched with --ssh default.
	sshAgents, err := sshforward.Parse(f.ssh, os.Getenv)
	if err != nil {
		return usagef("%v", err)
	}
	contextDir, dockerfile, cleanupContext, err := resolveContext(ctx, contextDir, f.file, sshAgents)
	if err != nil {
		return err
	}
	defer cleanupContext()
	f.file = dockerfile
	st, err := os.Stat(contextDir)
	if err != nil || !st.IsDir() {
		return usagef("build context %q is not a directory", contextDir)
	}
	plats, err := parsePlatformFlag(f.platform)
	if err != nil {
		return err
	}
	if f.quiet {
		f.progress = "quiet"
	}
	if err := checkProgress(f.progress); err != nil {
		return err
	}
	buildArgs, err := parseBuildArgs(f.buildArgs)
	if err != nil {
		return err
	}
	secrets, err := parseSecrets(f.secrets)
	if err != nil {
		return err
	}
	labels := map[string]string{}
	for _, l := range f.labels {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return usagef("--label %q: want KEY=VALUE", l)
		}
		labels[k] = v
	}
	outputs, err := export.ParseOutputs(f.outputs)
	if err != nil {
		return &usageError{err}
	}
	outputs, targets, err := prepareOutputs(ctx, outputs, f.load, f.annotations, cmd.OutOrStdout())
	if err != nil {
		return err
	}
	if err := checkPlatformOutputs(plats, outputs); err != nil {
		return err
	}
	propagateSourceDateEpoch(buildArgs)
	keepTimes, err := keepTimestamps(outputs)
	if err != nil {
		return err
	}
	cacheTo, err := parseCacheTo(f.cache.to)
	if err != nil {
		return err
	}
	cacheFrom, err := parseCacheFrom(f.cache.from)
	if err != nil {
		return err
	}
	provReq, err := parseProvenanceFlags(f.provenance, f.attests)
	if err != nil {
		return err
	}
	namedContexts, err := parseBuildContexts(f.buildContexts)
	if err != nil {
		return err
	}

	dfPath := f.file
	if dfPath == "" {
		dfPath = filepath.Join(contextDir, "Dockerfile")
	}
	_, loadSpan := trace.Start(ctx, "load Dockerfile")
	var src []byte
	dfName := filepath.Base(dfPath)
	if dfPath == "-" {
		src, err = io.ReadAll(os.Stdin)
		dfName = "Dockerfile"
	} else {
		src, err = os.ReadFile(dfPath)
	}
	if err != nil {
		return fmt.Errorf("reading Dockerfile: %w", err)
	}
	report.dockerfile = src
	if call, err := callMode(f.call, f.check); err != nil {
		return err
	} else if call == "check" {
		loadSpan.End()
		return runCheck(ctx, cmd.OutOrStdout(), root, contextDir, dfPath, dfName, src, f, buildArgs)
	}
	df, err := parser.Parse(dfName, src)
	if err != nil {
		return err
	}
	excludes, err := readDockerignore(contextDir, dfPath)
	if err != nil {
		return err
	}
	loadSpan.End()

	features.Use(root) // what earlier builds found out about the host
	sandbox, err := f.sandbox()
	if err != nil {
		return err
	}
	if err := checkNetworkFlag(f.network, sandbox); err != nil {
		return err
	}
	resolver, err := f.registry.resolver()
	if err != nil {
		return err
	}
	f.registry.useRequestKeychain(ctx) // kiln serve: the client's credentials (serveregistry.go)
	_, storeSpan := trace.Start(ctx, "open store")
	store, err := storeOpen(root)
	storeSpan.End()
	if err != nil {
		return err
	}
	defer store.Close()
	store.MaxLayerSize = f.registry.layerSizeLimit()
	explainDir := ""
	if f.explainCache {
		explainDir = filepath.Join(store.Root, "explain")
	}
	dfID := "stdin"
	if dfPath != "-" {
		if abs, err := filepath.Abs(dfPath); err == nil {
			dfID = abs
		}
	}
	if f.onError != "fail" && f.onError != "keep" {
		return usagef("--on-error %s: use fail or keep", f.onError)
	}
	if f.jobs < 0 {
		return usagef("--jobs %d: want a positive number", f.jobs)
	}
	printer, err := openProgress(f.progress, cmd.ErrOrStderr(), store.Root)
	if err != nil {
		return err
	}
	defer progress.Close(printer)
	report.display = printer
	// Work the build leaves to finish while its outputs are written (the
	// build network's teardown): done before the store is closed.
	var background sync.WaitGroup
	defer background.Wait()
	ictx, importSpan := trace.Start(ctx, "import cache")
	remote := importCaches(ictx, f.registry.res, cacheFrom, printer.Messages())
	importSpan.End()
	bases := memoize(imageResolver(store, resolver, f.pull))
	recorder := &recordingResolver{next: bases}
	// The lint rules run beside the build (their base images are the
	// build's, resolved once), unless their outcome can stop it.
	var lintWarnings []lint.Warning
	var lintErr error
	linted := make(chan struct{})
	runLint := func() {
		defer close(linted)
		lintWarnings, lintErr = lintBuild(ctx, src, df, f.target, f.platform != "", buildArgs, excludes, bases)
	}
	if lint.BeforeBuild(src, buildArgs) {
		runLint()
		if lintErr != nil {
			// the live view still runs: its message lines are drawn above it
			printLintSummary(printer.Messages(), f.progress, lintWarnings)
			return lintErr
		}
	} else {
		go runLint()
		defer func() { <-linted }()
	}
	prov := &provenanceInputs{
		req:            provReq,
		contextDir:     contextDir,
		dockerfilePath: dockerfileProvenancePath(contextDir, dfPath),
		dockerfile:     src,
		target:         f.target,
		buildArgs:      buildArgs,
		labels:         labels,
		secretIDs:      sortedSecretIDs(secrets),
		started:        started,
		resolver:       recorder,
		log:            printer.Messages(),
		platform:       platform.Format(plats[0]),
	}
	opts := planner.Options{
		Dockerfile: df,
		ContextDir: contextDir,
		Excludes:   excludes,
		BuildArgs:  buildArgs,
		Target:     f.target,
		Labels:     labels,
		Network:    f.network,
		Background: &background,
		Store:      store,
		Resolver:   recorder,
		Sandbox:    sandbox,
		Progress:   printer,

		NoCache:       f.noCache,
		NoCacheFilter: f.noCacheFilter,
		ExplainDir:    explainDir,
		DockerfileID:  dfID,
		Jobs:          f.jobs,
		Secrets:       secrets,
		SSH:           sshAgents,
		KeepFailedDir: keepDir(f.onError, store.Root, printer.ID),

		KeepTimestamps: keepTimes, // rewrite-timestamp=false
		Remote:         remote,
		NamedContexts:  namedContexts,
		Platform:       plats[0],
		Shared:         sharedSteps(ctx), // kiln serve's builds share steps
		BuildID:        printer.ID,
	}
	if len(plats) > 1 {
		return runMultiPlatform(ctx, cmd, multiBuild{f: f, opts: opts, platforms: plats, outputs: outputs,
			store: store, prov: prov, cacheTo: cacheTo, printer: printer})
	}
	res, err := planner.Build(ctx, opts)
	if err != nil {
		return err
	}
	warnRewriteWithoutEpoch(printer.Messages(), outputs, res.Epoch)
	if res.RawConfig, err = inlineConfig(cacheTo, res); err != nil {
		return err
	}
	for _, out := range outputs {
		ctx, outSpan := trace.Start(ctx, "export "+out.Type)
		outSpan.SetString("dest", out.Dest)
		out.Pusher = f.registry
		out.Attest = prov.attester(out)
		layers := res.Layers
		if out.Type != "registry" && out.Type != "image" {
			// Only a push can skip the bytes (a registry mounts them);
			// any other output reads them, verified into the store first.
			if layers, err = store.Materialize(ctx, layers, nil); err != nil {
				return err
			}
		}
		if comp, err := export.CompressionOf(out); err == nil && (comp.Kind != "gzip" || comp.Level != 0) {
			// recompressing reads the bytes: lazy layers come first
			if layers, err = store.Materialize(ctx, layers, nil); err != nil {
				return err
			}
			rctx, span := trace.Start(ctx, "recompress to "+comp.Kind)
			layers, err = store.Recompressed(rctx, layers, cache.Compression{Kind: comp.Kind, Level: comp.Level})
			span.End()
			if err != nil {
				return err
			}
		}
		img, err := image.New(store, res.RawConfig, layers, out.Type != "docker")
		if err != nil {
			return err
		}
		step := printer.Step(targets.stepName(out))
		memo := exportMemo(store.Root, img, out, f.tags)
		if out.Attest != nil {
			memo = outputMemo{} // the provenance's times differ on every build
		}
		if memo.upToDate() {
			step.Cached()
			outSpan.SetString("result", "up to date")
			outSpan.End()
			continue
		}
		if err := targets.writeOutput(ctx, progress.WatchImage(step, img), out, f.tags); err != nil {
			err = exportError(out, err)
			step.Fail(err)
			return err
		}
		memo.record()
		step.Done()
		outSpan.End()
	}
	img, err := image.New(store, res.RawConfig, res.Layers, true)
	if err != nil {
		return err
	}
	if len(f.tags) > 0 && !anyLazy(res.Layers) {
		// -t names the image in the store too: FROM NAME finds it there.
		// Not an image some of whose layers are still only in a remote
		// cache: naming it would download them.
		_, sp := trace.Start(ctx, "record image")
		err := store.PutImage(ctx, f.tags, img)
		sp.End()
		if err != nil {
			return fmt.Errorf("recording %s in the local store: %w", strings.Join(f.tags, ", "), err)
		}
	}
	var pushAttest export.Attester
	if f.registry.pushFlag {
		pushAttest = prov.attester(export.Output{Type: "registry"})
	}
	f.registry.annotations = targets.annotations
	if err := f.registry.push(ctx, img, f.tags, printer.Messages(), pushAttest); err != nil {
		return err
	}
	if len(cacheTo) > 0 {
		notePushed(f.registry, res.Layers)
		cctx, sp := trace.Start(ctx, "export cache")
		exportCaches(cctx, f.registry.res, store, cacheTo, res.Steps, remote, printer.Messages())
		sp.End()
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	dg, err := img.Digest()
	if err != nil {
		return err
	}
	if f.iidfile != "" {
		if err := os.WriteFile(f.iidfile, []byte(id.String()), 0o644); err != nil {
			return fmt.Errorf("writing --iidfile: %w", err)
		}
	}
	if f.progress == "quiet" {
		fmt.Fprintln(targets.idWriter(cmd.OutOrStdout(), cmd.ErrOrStderr()), id)
	}
	var size int64
	for _, l := range res.Layers {
		size += l.Size
	}
	progress.Summarize(printer, progress.Summary{ImageID: id.String(), Digest: dg.String(), Size: size, Layers: len(res.Layers), Names: f.tags})
	<-linted
	printLintSummary(cmd.ErrOrStderr(), f.progress, lintWarnings)
	return nil
}

// parseBuildArgs reads --build-arg K=V and K (value from the environment;
// skipped when unset, like docker).
func parseBuildArgs(list []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range list {
		k, v, ok := strings.Cut(a, "=")
		if k == "" {
			return nil, usagef("--build-arg %q: want KEY=VALUE or KEY", a)
		}
		if !ok {
			ev, set := os.LookupEnv(k)
			if !set {
				continue
			}
			v = ev
		}
		out[k] = v
	}
	return out, nil
}

// readDockerignore reads <Dockerfile>.dockerignore beside the Dockerfile,
// else CONTEXT/.dockerignore, as BuildKit does.
func readDockerignore(contextDir, dfPath string) ([]string, error) {
	candidates := []string{filepath.Join(contextDir, ".dockerignore")}
	if dfPath != "-" {
		candidates = append([]string{dfPath + ".dockerignore"}, candidates...)
	}
	for _, p := range candidates {
		fh, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		defer fh.Close()
		pats, err := ignorefile.ReadAll(fh)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		return pats, nil
	}
	return nil, nil
}

// parseSecrets reads --secret in buildx's syntax: id=ID,src=FILE (also
// source=), id=ID,env=VAR, or type=file|env; without src or env the id
// names an environment variable, else a file of that name.
func parseSecrets(list []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, spec := range list {
		var id, src, env, typ string
		for _, field := range strings.Split(spec, ",") {
			k, v, ok := strings.Cut(field, "=")
			if !ok {
				return nil, usagef("--secret %q: want id=ID,src=FILE or id=ID,env=VAR", spec)
			}
			switch strings.ToLower(k) {
			case "id":
				id = v
			case "src", "source":
				src = v
			case "env":
				env = v
			case "type":
				typ = v
			default:
				return nil, usagef("--secret %q: unknown key %q", spec, k)
			}
		}
		if id == "" {
			return nil, usagef("--secret %q: id= is required", spec)
		}
		if src == "" && env == "" {
			if typ == "env" {
				env = id
			} else if typ == "file" {
				src = id
			} else if _, ok := os.LookupEnv(id); ok {
				env = id
			} else {
				src = id
			}
		}
		if env != "" && src == "" {
			v, ok := os.LookupEnv(env)
			if !ok {
				return nil, usagef("--secret %q: environment variable %s is not set", spec, env)
			}
			out[id] = []byte(v)
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, usagef("--secret %q: %v", spec, err)
		}
		out[id] = data
	}
	return out, nil
}

// keepDir is where --on-error=keep keeps a failing RUN's state.
func keepDir(onError, root, buildID string) string {
	if onError != "keep" {
		return ""
	}
	return debugDir(root, buildID)
}
