// Package planner walks a Dockerfile's stage graph for the requested
// target, folds metadata instructions into the image config with BuildKit's
// rules, expands variables with BuildKit's shell lexer, and runs the steps
// that change files — independent stages in parallel.
package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-build/kiln/buildctx"
	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/inflight"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/sshforward"
	"github.com/kiln-build/kiln/trace"
)

// targetOS is the OS of every image kiln builds, for path rules.
const targetOS = "linux"

// ImageResolver fetches images named in FROM and COPY --from.
type ImageResolver interface {
	// ResolvePlatform returns the image ref names for platform p (from an
	// index, the entry that matches p best) and its canonical name
	// (normalised, with digest) for messages and history.
	ResolvePlatform(ctx context.Context, ref string, p ocispec.Platform) (v1.Image, string, error)
}

// Options describe one build.
type Options struct {
	Dockerfile *parser.Dockerfile
	ContextDir string
	Excludes   []string          // .dockerignore patterns
	BuildArgs  map[string]string // --build-arg
	Target     string            // --target; "" = last stage
	Labels     map[string]string // --label
	Network    string            // default network of RUN: executor.NetworkDefault (also ""), NetworkNone or NetworkHost
	// Background, when set, is where Build leaves work that need not
	// hold up the result (tearing the build's network down); the caller
	// waits on it before exiting.
	Background *sync.WaitGroup
	Store      *cache.Store
	Resolver   ImageResolver
	Progress   progress.Printer // nil shows nothing
	Now        time.Time        // image creation time; zero = time.Now()
	Sandbox    executor.Sandbox // settings of every RUN sandbox

	// Cache control: NoCache runs every step; NoCacheFilter runs every step
	// of the named stages. Results are recorded either way.
	NoCache       bool
	NoCacheFilter []string
	// ExplainDir, when set, is where the inputs of each step are kept so a
	// miss can say what changed (--explain-cache).
	ExplainDir string
	// DockerfileID tells builds of different Dockerfiles apart for
	// --explain-cache (the Dockerfile's absolute path).
	DockerfileID string
	// Jobs bounds the steps that run at once; 0 is the number of CPUs.
	Jobs int
	// Slots, when set, replaces Jobs: one token per running step, shared
	// by the builds of several platforms so that together they stay
	// within --jobs.
	Slots chan struct{}
	// Platform is the target platform (TARGETPLATFORM); zero is the
	// native one. Stages without FROM --platform build for it.
	Platform ocispec.Platform
	// MultiPlatform prefixes step names with their platform, as BuildKit
	// does when a build has several ("[linux/arm64 2/4] RUN …").
	MultiPlatform bool
	// Secrets are the --secret values by id, for RUN --mount=type=secret.
	Secrets map[string][]byte
	// SSH are the --ssh agents by id, for RUN --mount=type=ssh.
	SSH sshforward.Agents
	// KeepFailedDir, when set, is where a failing RUN's filesystem and
	// process settings are kept for kiln debug (--on-error=keep).
	KeepFailedDir string
	// KeepTimestamps keeps the mtimes of files in new layers even under
	// SOURCE_DATE_EPOCH (an output's rewrite-timestamp=false); by default
	// the epoch clamps them, so that a build's layers are reproducible.
	KeepTimestamps bool
	// Remote, when set, holds step records imported from remote caches
	// (--cache-from), consulted when the store has no record of a key.
	// Its hits are lazy, and so are base-image layers: nothing is
	// downloaded until a step that runs needs the filesystem.
	Remote RemoteRecords
	// NamedContexts are the --build-context values by name: they stand
	// for the stage or image of that name in FROM, COPY --from and RUN
	// --mount from= (see namedctx.go).
	NamedContexts map[string]buildctx.Source
	// Shared, when set, is shared by the builds running at once in this
	// process (kiln serve): a step another of them is running is waited
	// for and its result used, not run twice. Step outcomes go to its
	// Events, naming the build BuildID.
	Shared  *inflight.Table
	BuildID string
}

// RemoteRecords are step records imported from remote caches.
type RemoteRecords interface {
	// Step returns the record of key and, unless the record is empty,
	// its layer: lazy (LayerInfo.Remote set) unless already stored.
	Step(key string) (cache.StepRecord, cache.LayerInfo, bool)
}

// StepResult is a step of the build that ran or was found in a cache.
type StepResult struct {
	Key    string
	Record cache.StepRecord
	Layer  cache.LayerInfo // zero when Record.Empty
	// Target is set for the steps of the target stage and of the stages
	// it is built FROM: what --cache-to mode=min exports.
	Target bool
	// CacheMounts are the ids of the step's RUN --mount=type=cache, for
	// --cache-to …,mounts=true.
	CacheMounts []string
}

// Result is the built image: its config and its layers, bottom first.
type Result struct {
	Config    dockerspec.DockerOCIImage
	RawConfig []byte
	Layers    []cache.LayerInfo
	Epoch     *time.Time // SOURCE_DATE_EPOCH of the build, if set
	// Steps are the steps that ran or were cache hits, stage by stage.
	Steps []StepResult
}

// build is the state of one Build call.
type build struct {
	opt        Options
	df         *parser.Dockerfile
	globalArgs envList
	stages     []*stage
	byName     map[string]*stage
	prog       progress.Printer
	now        time.Time
	imagesMu   sync.Mutex
	images     map[string]*imageSource // COPY --from=<image> sources
	ctxHash    *contexthash.Hasher
	snapMu     sync.Mutex
	snaps      map[string]*sharedSnapshot // context mount snapshots, by source and checksum
	wg         sync.WaitGroup
	errMu      sync.Mutex
	firstErr   error
	cancel     context.CancelFunc
	jobs       chan struct{} // one token per running step
	epoch      *time.Time    // SOURCE_DATE_EPOCH, if set

	reach map[*stage]bool // the stages the target needs
	ahead seedsAhead      // cache mounts restored ahead of their steps (seeds.go)

	// outer is Build's own context: images are resolved with it, not
	// with the build's cancelable one, because their lazy layers are read
	// after Build returns (by an export), and a remote layer keeps the
	// context it was resolved with.
	outer context.Context

	// named are the --build-context values, by normalised name.
	named map[string]*namedSource

	netMu sync.Mutex
	// wantNet: a RUN will need the build's network; netOnce starts
	// setting it up early.
	wantNet bool
	// warm starts each RUN step's sandbox child while the step before it
	// runs.
	warm      *executor.Warm
	netClosed bool // closeNetwork ran: no network may be set up after
	netOnce   sync.Once
	net       *executor.Network // the RUN steps' network, once one needs it
	netDir    string

	scratchDirs scratchAhead // the next step's scratch directory, made ahead

	topMu sync.Mutex
	tops  map[[2]string]topEntry // a stored layer's top-level names, by (layer, name) (inLowers)
}

// Build runs the build and returns the target stage's image.
func Build(ctx context.Context, opt Options) (*Result, error) {
	if opt.Network == "" {
		opt.Network = executor.NetworkDefault
	}
	opt.Platform = targetPlatform(opt)
	b := &build{
		opt:    opt,
		df:     opt.Dockerfile,
		byName: map[string]*stage{},
		prog:   opt.Progress,
		now:    opt.Now,
		images: map[string]*imageSource{},
		outer:  ctx,
	}
	if b.prog == nil {
		b.prog = progress.Discard
	}
	if b.now.IsZero() {
		b.now = time.Now().UTC()
	}
	b.initNamed()
	defer b.closeNamed()
	_, planSpan := trace.Start(ctx, "plan")
	err := b.plan()
	planSpan.End()
	if err != nil {
		return nil, err
	}
	b.jobs = opt.Slots
	if b.jobs == nil {
		jobs := opt.Jobs
		if jobs <= 0 {
			jobs = runtime.NumCPU()
		}
		b.jobs = make(chan struct{}, jobs)
	}
	if opt.ContextDir != "" && opt.Store != nil {
		_, span := trace.Start(ctx, "context hash: load state")
		h, err := contexthash.Open(filepath.Join(opt.Store.Root, "contexthash"), opt.ContextDir)
		span.End()
		if err != nil {
			return nil, err
		}
		b.ctxHash = h
		// Saved off the build's path: the export need not wait for it.
		defer b.later(func() {
			_, span := trace.Start(b.outer, "context hash: save state")
			h.Save()
			span.End()
		})
		defer b.removeSnapshots()
	}
	target, reach, err := b.reachable()
	if err != nil {
		return nil, err
	}
	b.reach = reach
	// Before any work: a RUN that cannot execute here would fail after
	// the pulls and every step before it.
	if err := b.checkEmulation(reach); err != nil {
		return nil, err
	}
	netRuns := b.netRuns(reach)
	b.wantNet = netRuns > 0
	if b.ctxHash != nil {
		for _, st := range b.stages {
			if reach[st] {
				prefetchContext(b.ctxHash, st, opt.Excludes)
			}
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.cancel = cancel
	defer b.startAhead(ctx)()
	// After every stage has returned, and so every step has ended.
	defer b.closeNetwork()
	defer b.dropScratch()
	b.warm = executor.NewWarmIn(ctx, func() (string, error) {
		if b.opt.Store != nil {
			return b.opt.Store.TempDir("warm-")
		}
		return os.MkdirTemp("", "kiln-warm-")
	})
	b.warm.Expect(netRuns)
	defer b.warm.Close()
	for _, st := range b.stages {
		if reach[st] {
			b.start(ctx, st)
		}
	}
	b.wg.Wait()
	if b.firstErr != nil {
		return nil, b.firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.finalize(target)
}

// reachable returns the target stage and every stage it needs.
func (b *build) reachable() (*stage, map[*stage]bool, error) {
	target := b.stages[len(b.stages)-1]
	if b.opt.Target != "" {
		t, ok := b.byName[strings.ToLower(b.opt.Target)]
		if !ok {
			return nil, nil, fmt.Errorf("target stage %q could not be found%s", b.opt.Target, suggestStage(b.opt.Target, b.stageNames()))
		}
		target = t
	}
	reach := map[*stage]bool{}
	var mark func(s *stage)
	mark = func(s *stage) {
		if reach[s] {
			return
		}
		reach[s] = true
		if s.base != nil {
			mark(s.base)
		}
		for _, d := range s.fromDeps {
			mark(d)
		}
	}
	mark(target)
	return target, reach, nil
}

// start runs s in the background unless it already runs; a stage that
// only a trigger or a mount turned out to need starts when first waited for.
func (b *build) start(ctx context.Context, s *stage) {
	s.startOnce.Do(func() {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			err := b.runStage(ctx, s)
			if err != nil {
				b.errMu.Lock()
				if b.firstErr == nil {
					b.firstErr = err
				}
				b.errMu.Unlock()
				b.cancel()
			}
			s.finish(err)
		}()
	})
}

// waitFor starts dep if needed and waits until it has run.
func (b *build) waitFor(ctx context.Context, dep *stage) error {
	b.start(ctx, dep)
	return dep.wait(ctx)
}

func (b *build) stageNames() []string {
	var names []string
	for _, s := range b.stages {
		if s.name != "" {
			names = append(names, s.name)
		}
	}
	return names
}

// plan expands the global ARGs and FROM lines and links stages to the
// stages they depend on, without touching any image or file.
func (b *build) plan() error {
	df := b.df
	targetName := b.opt.Target
	if targetName == "" {
		targetName = df.Stages[len(df.Stages)-1].Name
	}
	if targetName == "" {
		targetName = "default"
	}
	b.globalArgs = defaultArgs(b.opt.BuildArgs, targetName, platform.Native(), b.opt.Platform)
	lex := shell.NewLex(df.Escape)
	for _, a := range df.MetaArgs {
		for _, kv := range a.Args {
			if v, ok := b.opt.BuildArgs[kv.Key]; ok {
				b.globalArgs = b.globalArgs.Set(kv.Key, v)
				continue
			}
			if kv.Value != nil {
				v, _, err := lex.ProcessWord(*kv.Value, b.globalArgs)
				if err != nil {
					return parser.At(df.Name, a.Location(), err)
				}
				b.globalArgs = b.globalArgs.Set(kv.Key, v)
			}
		}
	}
	epoch, err := sourceDateEpoch(b.opt.BuildArgs, b.globalArgs)
	if err != nil {
		return err
	}
	b.epoch = epoch

	for i, st := range df.Stages {
		s := &stage{index: i, st: st, name: st.Name, done: make(chan struct{}), epoch: b.epoch}
		base, _, err := lex.ProcessWord(st.BaseName, b.globalArgs)
		if err != nil {
			return parser.At(df.Name, st.Location, err)
		}
		if base == "" {
			return parser.At(df.Name, st.Location, fmt.Errorf("base name (%s) should not be blank", st.BaseName))
		}
		s.baseName = base
		s.platform = b.opt.Platform
		// Like BuildKit, FROM names only stages defined above it.
		if bs, ok := b.byName[base]; ok {
			s.base = bs
			s.platform = bs.platform
		}
		if st.Platform != "" {
			p, _, err := lex.ProcessWord(st.Platform, b.globalArgs)
			if err != nil {
				return parser.At(df.Name, st.Location, err)
			}
			if s.platform, err = platform.Parse(p); err != nil {
				return parser.At(df.Name, st.Location, fmt.Errorf("FROM --platform=%s: %w (want os/arch[/variant], e.g. linux/arm64)", st.Platform, err))
			}
		}
		// Like BuildKit, FROM names only stages defined above it.
		if bs, ok := b.byName[base]; ok {
			s.base = bs
		}
		b.planNamed(s)
		s.prefix = b.platformPrefix(s.platform)
		if s.name == "" {
			s.displayName = fmt.Sprintf("stage-%d", i)
		} else {
			s.displayName = s.name
			b.byName[s.name] = s
		}
		b.stages = append(b.stages, s)
	}
	if len(b.stages) == 1 {
		b.stages[0].displayName = ""
	}
	for _, s := range b.stages {
		if s.replaced {
			continue // a named context: none of its instructions run
		}
		if err := b.linkFromDeps(s, s.st.Commands); err != nil {
			return err
		}
		// A stage's ONBUILD triggers run in the stages built FROM it.
		if s.base != nil {
			for _, c := range s.base.st.Commands {
				if ob, ok := c.(*instructions.OnbuildCommand); ok {
					cmd, err := parseTrigger(ob.Expression)
					if err != nil {
						return parser.At(b.df.Name, s.st.Location, err)
					}
					s.triggers = append(s.triggers, cmd)
				}
			}
			if err := b.linkFromDeps(s, s.triggers); err != nil {
				return err
			}
		}
		s.total = s.countSteps()
	}
	return checkCycles(b)
}

func (b *build) linkFromDeps(s *stage, cmds []instructions.Command) error {
	for _, c := range cmds {
		if run, ok := c.(*instructions.RunCommand); ok {
			// RUN --mount=...,from=STAGE needs that stage built first
			for _, m := range instructions.GetMounts(run) {
				if m.From != "" {
					if dep := b.stageRef(m.From); dep != nil {
						s.fromDeps = append(s.fromDeps, dep)
					}
				}
			}
			continue
		}
		cp, ok := c.(*instructions.CopyCommand)
		if !ok || cp.From == "" {
			continue
		}
		if strings.Contains(cp.From, "$") {
			return parser.At(b.df.Name, c.Location(), errors.New("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"))
		}
		if dep := b.stageRef(cp.From); dep != nil {
			s.fromDeps = append(s.fromDeps, dep)
		} else if _, err := strconv.Atoi(cp.From); err == nil {
			return parser.At(b.df.Name, c.Location(), fmt.Errorf("COPY --from=%s: invalid stage index %s; the Dockerfile has stages 0 to %d", cp.From, cp.From, len(b.stages)-1))
		}
	}
	return nil
}

// stageRef finds a stage by name or index, or returns nil (an image ref).
func (b *build) stageRef(ref string) *stage {
	if s, ok := b.byName[strings.ToLower(ref)]; ok {
		return s
	}
	if i, err := strconv.Atoi(ref); err == nil && i >= 0 && i < len(b.stages) {
		return b.stages[i]
	}
	return nil
}

func checkCycles(b *build) error {
	state := map[*stage]int{}
	var visit func(s *stage) error
	visit = func(s *stage) error {
		switch state[s] {
		case 1:
			return parser.At(b.df.Name, s.st.Location, fmt.Errorf("circular dependency detected on stage: %s", s.displayName))
		case 2:
			return nil
		}
		state[s] = 1
		deps := append([]*stage{}, s.fromDeps...)
		if s.base != nil {
			deps = append(deps, s.base)
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[s] = 2
		return nil
	}
	for _, s := range b.stages {
		if err := visit(s); err != nil {
			return err
		}
	}
	return nil
}

// defaultArgs are the platform ARGs BuildKit predefines in global scope.
// BUILD* describe this machine, TARGET* the platform being built.
func defaultArgs(overrides map[string]string, target string, build, tgt ocispec.Platform) envList {
	var env envList
	for _, kv := range [][2]string{
		{"BUILDPLATFORM", platform.Format(build)},
		{"BUILDOS", build.OS},
		{"BUILDOSVERSION", build.OSVersion},
		{"BUILDARCH", build.Architecture},
		{"BUILDVARIANT", build.Variant},
		{"TARGETPLATFORM", platform.Format(tgt)},
		{"TARGETOS", tgt.OS},
		{"TARGETOSVERSION", tgt.OSVersion},
		{"TARGETARCH", tgt.Architecture},
		{"TARGETVARIANT", tgt.Variant},
		{"TARGETSTAGE", target},
	} {
		v := kv[1]
		if ov, ok := overrides[kv[0]]; ok {
			v = ov
		}
		env = env.Set(kv[0], v)
	}
	return env
}

// finalize applies the build-wide settings to the target's config and
// serialises it.
func (b *build) finalize(target *stage) (*Result, error) {
	img := cloneImage(target.img)
	if len(b.opt.Labels) > 0 && img.Config.Labels == nil {
		img.Config.Labels = map[string]string{}
	}
	for k, v := range b.opt.Labels {
		img.Config.Labels[k] = v
	}
	img.OS, img.Architecture, img.Variant = target.platform.OS, target.platform.Architecture, target.platform.Variant
	// The image is as old as its newest step, so that a rebuild that runs
	// nothing gives the same image ID; without any history, it is now.
	var created time.Time
	for _, h := range img.History {
		if h.Created != nil && h.Created.After(created) {
			created = *h.Created
		}
	}
	if b.epoch != nil {
		// BuildKit's rule: the time of the last history entry, which is
		// the epoch once the Dockerfile added one (a base image's entries
		// keep their times).
		created = *b.epoch
		if n := len(img.History); n > 0 && img.History[n-1].Created != nil {
			created = *img.History[n-1].Created
		}
	}
	if created.IsZero() {
		created = b.now
	}
	img.Created = &created
	for i := range img.History {
		if img.History[i].Created == nil {
			img.History[i].Created = &created
		}
	}
	img.RootFS.Type = "layers"
	img.RootFS.DiffIDs = nil
	for _, l := range target.layers {
		img.RootFS.DiffIDs = append(img.RootFS.DiffIDs, digestOf(l.DiffID))
	}
	raw, err := json.Marshal(img)
	if err != nil {
		return nil, fmt.Errorf("encoding image config: %w", err)
	}
	chain := map[*stage]bool{}
	for s := target; s != nil; s = s.base {
		chain[s] = true
	}
	var steps []StepResult
	for _, s := range b.stages {
		for _, st := range s.steps {
			st.Target = chain[s]
			steps = append(steps, st)
		}
	}
	return &Result{Config: img, RawConfig: raw, Layers: append([]cache.LayerInfo(nil), target.layers...), Steps: steps, Epoch: b.epoch}, nil
}

// fileExists reports whether p exists (used for optional files).
func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
