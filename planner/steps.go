package planner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/util/system"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/inflight"
	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/trace"
)

// imageSource is an image used by COPY --from=<image>, pulled once per build.
type imageSource struct {
	once      sync.Once
	layers    []cache.LayerInfo
	canonical string
	err       error
}

// pullBase resolves a stage's FROM image and makes its layers available.
func (b *build) pullBase(ctx context.Context, s *stage) (dockerspec.DockerOCIImage, []cache.LayerInfo, string, error) {
	log := b.prog.Step(s.stepName("FROM "+s.baseName, false))
	img, layers, canonical, err := b.pull(ctx, s.baseName, s.platform, log)
	if err != nil {
		log.Fail(err)
		return img, nil, "", err
	}
	warnPlatformMismatch(log, canonical, img, s.platform)
	log.Done()
	return img, layers, canonical, nil
}

// pull fetches ref's config and unpacks its layers into the store (layers
// already stored are not downloaded).
func (b *build) pull(ctx context.Context, ref string, p ocispec.Platform, log progress.Step) (dockerspec.DockerOCIImage, []cache.LayerInfo, string, error) {
	var cfg dockerspec.DockerOCIImage
	if b.opt.Resolver == nil {
		return cfg, nil, "", errors.New("no image resolver configured")
	}
	rctx, resolveSpan := trace.Start(ctx, "resolve "+ref)
	if b.opt.Remote != nil {
		// The image keeps this context for its lazy layers, fetched
		// long after the resolve (and after the stage, for a later
		// stage's step): neither the stage's cancellation nor the
		// resolve's span may hang over those requests.
		rctx = b.outer
	}
	img, canonical, err := b.opt.Resolver.ResolvePlatform(rctx, ref, p)
	resolveSpan.SetString("image", canonical)
	resolveSpan.End()
	if err != nil {
		return cfg, nil, "", err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return cfg, nil, "", fmt.Errorf("reading config of %s: %w", canonical, err)
	}
	cfg, err = decodeConfig(raw)
	if err != nil {
		return cfg, nil, "", fmt.Errorf("image %s: %w", canonical, err)
	}
	cfg.Created = nil
	ls, err := img.Layers()
	if err != nil {
		return cfg, nil, "", fmt.Errorf("listing layers of %s: %w", canonical, err)
	}
	if b.opt.Remote != nil {
		// With a remote cache, the steps on this base may all be hits:
		// its layers are fetched when a step that runs needs them.
		infos, err := lazyLayers(b.opt.Store, ls)
		if err != nil {
			return cfg, nil, "", fmt.Errorf("listing layers of %s: %w", canonical, err)
		}
		return cfg, infos, canonical, nil
	}
	if missingLayer(b.opt.Store, ls) {
		// A base to download means steps on it will run: the build
		// network and the sandbox init are set up while the layers come.
		b.prepareNetwork()
	}
	infos := make([]cache.LayerInfo, len(ls))
	pctx, pullSpan := trace.Start(ctx, "pull "+canonical)
	defer pullSpan.End()
	g, gctx := errgroup.WithContext(pctx)
	g.SetLimit(3)
	for i, l := range ls {
		g.Go(func() error {
			lctx, span := trace.Start(gctx, "layer")
			info, err := b.opt.Store.PullLayer(lctx, progress.WatchLayer(log, l))
			span.SetString("diffID", info.DiffID.String())
			span.SetInt("bytes", info.Size)
			span.End()
			if err != nil {
				return fmt.Errorf("pulling layer %d of %s: %w", i+1, canonical, err)
			}
			infos[i] = info
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return cfg, nil, "", err
	}
	return cfg, infos, canonical, nil
}

// missingLayer reports whether one of ls is not in the store yet.
func missingLayer(store *cache.Store, ls []v1.Layer) bool {
	for _, l := range ls {
		d, err := l.DiffID()
		if err != nil {
			return true
		}
		if _, ok, err := store.LayerByDiffID(d); err != nil || !ok {
			return true
		}
	}
	return false
}

func (b *build) imageLayers(ctx context.Context, ref string, p ocispec.Platform) ([]cache.LayerInfo, string, error) {
	id := ref + "\x00" + platform.Format(p)
	b.imagesMu.Lock()
	src, ok := b.images[id]
	if !ok {
		src = &imageSource{}
		b.images[id] = src
	}
	b.imagesMu.Unlock()
	src.once.Do(func() {
		_, src.layers, src.canonical, src.err = b.pull(ctx, ref, p, nil)
	})
	return src.layers, src.canonical, src.err
}

// lowers lists layer directories top-most first, as overlayfs wants them.
func lowers(layers []cache.LayerInfo) []string {
	out := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		out = append(out, layers[i].Dir)
	}
	return out
}

// commit stores a step's upper dir as a layer (nothing when it is empty),
// records it under the step's key and advances the stage.
func (b *build) commit(ctx context.Context, s *stage, key, upper string, tar layer.TarOptions) error {
	cctx, span := trace.Start(ctx, "commit")
	info, empty, err := b.opt.Store.CommitDirWith(cctx, upper, tar)
	span.SetInt("bytes", info.Size)
	span.End()
	if err != nil {
		return fmt.Errorf("storing layer: %w", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if !b.opt.Now.IsZero() {
		now = b.opt.Now
	}
	rec := cache.StepRecord{Empty: empty, Created: now}
	if !empty {
		s.layers = append(s.layers, info)
		rec.DiffID = info.DiffID
	} else {
		info = cache.LayerInfo{}
	}
	_, recSpan := trace.Start(ctx, "record step")
	err = b.opt.Store.PutStep(key, rec)
	recSpan.End()
	if err != nil {
		return err
	}
	s.steps = append(s.steps, StepResult{Key: key, Record: rec, Layer: info})
	s.key = key
	s.lastEmpty = empty
	s.lastTime = &now
	return nil
}

// lookup applies the cached result of key to the stage, if there is one.
func (b *build) lookup(s *stage, key string) (bool, error) {
	if b.noCache(s) {
		return false, nil
	}
	rec, ok, err := b.opt.Store.Step(key)
	if err != nil {
		return false, err
	}
	var info cache.LayerInfo
	if ok && !rec.Empty {
		if info, ok, err = b.opt.Store.LayerByDiffID(rec.DiffID); err != nil {
			return false, err
		}
	}
	if !ok && b.opt.Remote != nil {
		// A remote hit stays lazy: only a step that runs on top of it,
		// or an export that reads it, fetches the layer.
		if rec, info, ok = b.opt.Remote.Step(key); ok && !rec.Empty && info.Lazy() {
			if stored, found, err := b.opt.Store.LayerByDiffID(rec.DiffID); err == nil && found {
				info = stored
			}
		}
	}
	if !ok {
		return false, nil
	}
	if !rec.Empty {
		s.layers = append(s.layers, info)
	} else {
		info = cache.LayerInfo{}
	}
	s.steps = append(s.steps, StepResult{Key: key, Record: rec, Layer: info})
	s.key = key
	s.lastEmpty = rec.Empty
	if !rec.Created.IsZero() {
		t := rec.Created
		s.lastTime = &t
	}
	return true, nil
}

// runStep is the common shape of a step that changes files: announce it,
// reuse its cached result or run it and commit its upper dir. run gets
// the step's context: what it does is traced within the step. alongside,
// when set, runs while the layers below the step are fetched (a RUN's
// mount sources and cache mounts: downloads and unpacks that need not wait
// for each other); its cleanup runs when the step is over.
func (b *build) runStep(ctx context.Context, s *stage, name string, k *stepKey, run func(ctx context.Context, log progress.Step, rootfs executor.Rootfs) error, alongside ...func(ctx context.Context, log progress.Step) (cleanup func(), err error)) (err error) {
	ctx, span := trace.Start(ctx, name)
	defer func() { span.SetError(err); span.End() }()
	tar := b.clampFor(k)
	key := k.sum()
	log := b.stepLog(s, k, name)
	_, lookupSpan := trace.Start(ctx, "cache lookup")
	hit, err := b.lookup(s, key)
	lookupSpan.End()
	if err != nil {
		log.Fail(err)
		return err
	}
	if hit {
		chainLinked(s, k, key)
		span.SetString("cache", "hit")
		b.stepEvent(name, key, inflight.Cached)
		log.Cached()
		return nil
	}
	release, hit, err := b.shareStep(ctx, s, name, key, log)
	if err != nil {
		log.Fail(err)
		return err
	}
	if hit {
		chainLinked(s, k, key)
		span.SetString("cache", "shared")
		log.Cached()
		return nil
	}
	defer release()
	b.restoreAhead(s) // the steps after this one will run too
	if msg := b.explain(s.pos, k); msg != "" {
		fmt.Fprintln(log, msg)
	}
	_, waitSpan := trace.Start(ctx, "wait for a job slot (--jobs)")
	select {
	case b.jobs <- struct{}{}:
		waitSpan.End()
		defer func() { <-b.jobs }()
	case <-ctx.Done():
		waitSpan.End()
		return ctx.Err()
	}
	b.prepareNetwork()
	_, dirSpan := trace.Start(ctx, "step directory")
	dir, rootfs, err := b.scratch()
	dirSpan.End()
	if err != nil {
		log.Fail(err)
		return err
	}
	defer b.removeLater(dir)
	var layers []cache.LayerInfo
	cleanups := make([]func(), len(alongside))
	defer func() {
		for _, c := range cleanups {
			if c != nil {
				c()
			}
		}
	}()
	if lazy := !k.linked && anyLazy(s.layers); !lazy && len(alongside) <= 1 {
		// Nothing to wait for side by side: no goroutines to hand over to.
		if !k.linked {
			layers = s.layers
		}
		for i, f := range alongside {
			if cleanups[i], err = f(ctx, log); err != nil {
				log.Fail(err)
				return err
			}
		}
	} else {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() (err error) {
			if k.linked {
				// a linked copy writes into an empty tree
				return nil
			}
			layers, err = b.materialize(gctx, s.layers, log)
			return err
		})
		for i, f := range alongside {
			g.Go(func() (err error) {
				cleanups[i], err = f(gctx, log)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			log.Fail(err)
			return err
		}
	}
	if !k.linked {
		s.layers = layers
	}
	rf := rootfs(layers)
	rctx, runSpan := trace.Start(ctx, "run")
	err = run(rctx, log, rf)
	runSpan.End()
	if err != nil {
		log.Fail(err)
		return err
	}
	if err := b.commit(ctx, s, key, rf.Upper, tar); err != nil {
		log.Fail(err)
		return err
	}
	chainLinked(s, k, key)
	b.stepEvent(name, key, inflight.Ran)
	_, doneSpan := trace.Start(ctx, "progress: done")
	log.Done()
	doneSpan.End()
	return nil
}

func (b *build) dispatchRun(ctx context.Context, s *stage, c *instructions.RunCommand, onbuild bool) error {
	args := c.CmdLine
	var files []executor.File
	if len(c.Files) > 0 {
		if len(args) != 1 || !c.PrependShell {
			return fmt.Errorf("parsing produced an invalid run command: %v", args)
		}
		if bkparser.MustParseHeredoc(args[0]) != nil {
			data := c.Files[0].Data
			if c.Files[0].Chomp {
				data = bkparser.ChompHeredocContent(data)
			}
			if strings.HasPrefix(data, "#!") {
				// A script with its own interpreter runs as a file, like BuildKit's
				// /dev/pipes mount; it is never part of the layer.
				name := path.Base(c.Files[0].Name)
				files = append(files, executor.File{Path: "/dev/pipes/" + name, Data: []byte(data), Mode: 0o755})
				args = []string{"/dev/pipes/" + name}
			} else {
				args = []string{data}
			}
		} else {
			var sb strings.Builder
			sb.WriteString(args[0])
			for _, f := range c.Files {
				sb.WriteByte('\n')
				sb.WriteString(f.Data)
				sb.WriteString(f.Name)
			}
			args = []string{sb.String()}
		}
	}
	if c.PrependShell {
		args = withShell(s.img, args)
	}
	if err := checkRunnable(s); err != nil {
		return err // an ONBUILD trigger, which Build could not check up front
	}
	network := instructions.GetNetwork(c)
	if network == instructions.NetworkDefault {
		network = b.opt.Network
	}
	if err := executor.CheckNetwork(network, b.opt.Sandbox); err != nil {
		return fmt.Errorf("RUN --network=%s: %w", network, err)
	}
	env := s.env.Clone()
	env = append(env, proxyEnv(b.opt.BuildArgs)...)

	k := newStepKey("run", s.key)
	k.addList("args", args)
	k.addEnv(s.env)
	k.add("workdir", s.workdir)
	k.add("user", s.user)
	k.add("network", network)
	k.add("security", instructions.GetSecurity(c))
	if rf := b.opt.Sandbox.RunFlagsKey(); rf != "" { // --add-host, --shm-size, --ulimit
		k.add("run-flags", rf)
	}
	for _, f := range files {
		k.add("file "+f.Path, string(f.Data))
	}
	rm, err := b.resolveMounts(ctx, s, c, k)
	if err != nil {
		return err
	}
	files = append(files, rm.files...)
	env = append(env, rm.env...)
	name := s.stepName(runDisplay(s, c), onbuild)
	rm.fetchLayers = b.materialize
	err = b.runStep(ctx, s, name, k, func(ctx context.Context, log progress.Step, rf executor.Rootfs) error {
		release, err := rm.prepare(ctx, filepath.Dir(rf.Upper), b.contextSnapshot, log)
		defer release()
		if err != nil {
			return fmt.Errorf("preparing RUN mounts: %w", err)
		}
		var net *executor.Network
		if network == executor.NetworkDefault {
			if net, err = b.network(ctx); err != nil {
				return err
			}
		}
		err = executor.Run(ctx, executor.RunSpec{
			Rootfs:   rf,
			Args:     args,
			Env:      env,
			Cwd:      s.workdir,
			User:     s.user,
			Network:  network,
			Net:      net,
			Files:    files,
			Mounts:   rm.mounts,
			Security: instructions.GetSecurity(c),
			Sandbox:  b.opt.Sandbox,
			Stdout:   log,
			Stderr:   log,
			Warm:     b.warm,
			Stubs:    &s.stubs,
		})
		if err == nil {
			err = b.addMountPointDirs(rf)
		}
		var ee *executor.ExitError
		if errors.As(err, &ee) {
			re := &RunError{Command: strings.Join(args, " "), Code: ee.Code, Signal: ee.Signal, Reason: ee.Reason, Tail: log.Tail(),
				Killed: ee.Killed, PidsLimit: ee.PidsLimit, Line: firstLine(c.Location())}
			if b.opt.KeepFailedDir != "" {
				re.Kept, re.KeepErr = keepFailed(b.opt.KeepFailedDir, DebugState{
					Step: name, Lowers: rf.Lowers, Args: args, Env: env, Cwd: s.workdir,
					User: s.user, Network: network,
				}, rf.Upper)
			}
			err = re
		}
		return err
	}, rm.fetch)
	if err != nil {
		return err
	}
	if len(rm.caches) > 0 {
		s.steps[len(s.steps)-1].CacheMounts = rm.cacheIDs()
	}
	s.history("RUN "+runCommandString(args, s.buildArgs, s.env), !s.lastEmpty, true)
	return nil
}

// RunError is a RUN step whose command failed.
type RunError struct {
	Command   string
	Code      int
	Signal    string
	Reason    string   // why it never ran, or why it was killed
	Tail      []string // the last lines of its output
	Killed    bool     // killed by kiln: out of memory, or --step-timeout (Reason says which)
	PidsLimit int64    // the step reached its process limit
	Line      int      // the RUN's line in the Dockerfile
	Kept      string   // --on-error=keep: where the failed state was kept
	KeepErr   error    // why it could not be kept
}

func (e *RunError) Error() string {
	if e.Killed {
		return fmt.Sprintf("RUN at line %d was killed: %s", e.Line, e.Reason)
	}
	if e.PidsLimit > 0 {
		return fmt.Sprintf("process %q did not complete successfully: exit code: %d (it reached its limit of %d processes; raise --pids-limit)", e.Command, e.Code, e.PidsLimit)
	}
	if e.Reason != "" {
		return fmt.Sprintf("process %q did not complete successfully: %s: exit code: %d", e.Command, e.Reason, e.Code)
	}
	if e.Signal != "" {
		return fmt.Sprintf("process %q did not complete successfully: killed by signal %s", e.Command, e.Signal)
	}
	return fmt.Sprintf("process %q did not complete successfully: exit code: %d", e.Command, e.Code)
}

// runCommandString is the history text of a RUN: the build args it saw,
// prefixed with their count, then the command.
func runCommandString(args []string, buildArgs []instructions.KeyValuePairOptional, env envList) string {
	var kvs []string
	idx := map[string]int{}
	for _, a := range buildArgs {
		v, ok := env.Get(a.Key)
		if !ok {
			v = a.ValueString()
		}
		if i, ok := idx[a.Key]; ok {
			kvs[i] = a.Key + "=" + v
			continue
		}
		idx[a.Key] = len(kvs)
		kvs = append(kvs, a.Key+"="+v)
	}
	if len(kvs) > 0 {
		kvs = append([]string{fmt.Sprintf("|%d", len(kvs))}, kvs...)
	}
	return strings.Join(append(kvs, args...), " ")
}

// proxyEnv passes the proxy build args to RUN steps, as BuildKit does,
// without declaring them.
func proxyEnv(args map[string]string) []string {
	var out []string
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy":
			l := strings.ToLower(k)
			out = append(out, strings.ToUpper(l)+"="+args[k], l+"="+args[k])
		}
	}
	return out
}

type copyCmd struct {
	sd           instructions.SourcesAndDest
	from         string
	chown, chmod string
	add          bool
	text         string
	loc          any
	onbuild      bool

	// ADD only: --checksum, --keep-git-dir, --unpack (remote sources).
	checksum   string
	keepGitDir *bool
	unpack     *bool
	// parents, excludes and link are COPY --parents, COPY/ADD --exclude
	// and --link.
	parents  bool
	excludes []string
	link     bool
}

func (b *build) dispatchCopy(ctx context.Context, s *stage, c copyCmd) error {
	name := "COPY"
	if c.add {
		name = "ADD"
	}
	dest, err := pathRelativeToWorkingDir(s.workdir, c.sd.DestPath)
	if err != nil {
		return err
	}
	if c.chmod != "" {
		// octal, or a symbolic mode (u+x,go-w) that the copier applies
		p, err := strconv.ParseUint(c.chmod, 8, 32)
		if (err == nil && p > 0o7777) || (err != nil && strings.Trim(c.chmod, "0123456789") == "") {
			return fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", c.chmod)
		}
	}
	op := copier.Op{Kind: "copy", Dest: dest, Chown: c.chown, Chmod: c.chmod,
		Selection: copier.Selection{Excludes: c.excludes, Parents: c.parents}}
	if c.add && (c.unpack == nil || *c.unpack) {
		op.Kind = "add"
	}
	localSources, remotes, cleanupRemote, err := b.remoteADD(ctx, c)
	if err != nil {
		return err
	}
	defer cleanupRemote()
	sources, err := copySources(localSources, c.parents)
	if err != nil {
		return err
	}
	op.Sources = sources
	// BuildKit links only a COPY without --chmod (dockerfile2llb: a
	// merge op needs the capability and no chmod); names cannot be
	// resolved on the empty tree a linked copy writes into.
	link := c.link && c.chmod == ""
	if c.link && chownByName(c.chown) {
		return fmt.Errorf("--chown=%s: user and group names can't be resolved when used with --link, use numeric uid[:gid] instead", c.chown)
	}

	k := newStepKey(op.Kind, s.key)
	if link {
		k = newLinkedKey(op.Kind, s.key)
	}
	k.add("dest", dest)
	k.add("chown", c.chown)
	k.add("chmod", c.chmod)
	k.addList("sources", op.Sources)
	addSelection(k, op.Selection)
	verb := strings.ToLower(name)

	var spec executor.CopySpec
	var fromLayers []cache.LayerInfo // COPY --from: unpacked only if the step runs
	switch {
	case b.namedDirFor(c.from) != nil:
		if err := b.copyFromNamedDir(ctx, b.namedDirFor(c.from), &op, &spec, k); err != nil {
			return err
		}
		c.from = "" // from here on, a copy from a context directory
	case c.from != "":
		op.FromStage = true
		var layers []cache.LayerInfo
		if dep := b.stageRef(c.from); dep != nil {
			if dep.index >= s.index {
				return fmt.Errorf("cannot copy from stage %q, it needs to be defined before current stage %q", c.from, s.label())
			}
			if err := b.waitFor(ctx, dep); err != nil {
				return err
			}
			layers = dep.layers
			k.add("from", dep.key)
		} else {
			var canonical string
			layers, canonical, err = b.imageLayers(ctx, c.from, s.platform)
			if err != nil {
				return fmt.Errorf("COPY --from=%s: no stage is named %q and it is no usable image%s: %w", c.from, c.from, suggestStage(c.from, b.stageNames()), err)
			}
			k.add("from", canonical)
		}
		fromLayers = layers
	case len(op.Sources) > 0:
		spec.SourceDir = b.opt.ContextDir
		op.Excludes = b.opt.Excludes
		if b.ctxHash == nil {
			return errors.New("no build context to copy from")
		}
		_, hashSpan := trace.Start(ctx, "context hash")
		sum, entries, err := b.ctxHash.ChecksumWith(op.Sources, op.Excludes, op.Selection)
		hashSpan.SetInt("files", int64(len(entries)))
		hashSpan.End()
		if err != nil {
			return fmt.Errorf("%s from the build context: %w", verb, err)
		}
		k.add("context", sum)
		// The copy checks that it reads exactly these entries, so that a
		// file edited after hashing is never cached under this key.
		op.Verify = true
		for _, e := range entries {
			k.note("file "+strings.TrimPrefix(e.Path, "/"), e.Sum)
			op.Expect = append(op.Expect, copier.Entry{Path: e.Path, Sum: e.Sum})
		}
	}
	for _, hd := range c.sd.SourceContents {
		k.add("heredoc "+hd.Path, hd.Data)
	}
	if c.unpack != nil {
		k.add("unpack", strconv.FormatBool(*c.unpack))
	}
	for i, r := range remotes {
		r.addKey(k, i)
	}

	msg := name
	if c.parents {
		msg += " --parents"
	}
	if c.chown != "" {
		msg += " --chown=" + c.chown
	}
	if c.chmod != "" {
		msg += " --chmod=" + c.chmod
	}
	for _, src := range c.sd.SourcePaths {
		msg += " " + src
	}
	for _, hd := range c.sd.SourceContents {
		msg += " <<" + hd.Path
	}
	msg += " " + c.sd.DestPath

	err = b.runStep(ctx, s, s.stepName(wordDisplay(s, c.text), c.onbuild), k, func(ctx context.Context, log progress.Step, rf executor.Rootfs) error {
		spec.Rootfs = rf
		if c.from != "" {
			src, err := b.materialize(ctx, fromLayers, log)
			if err != nil {
				return err
			}
			spec.Source = executor.Rootfs{Lowers: lowers(src)}
		}
		dir := filepath.Dir(rf.Upper)
		if c.from != "" && len(spec.Source.Lowers) == 0 {
			// a source stage without layers is an empty tree
			empty := filepath.Join(dir, "empty")
			if err := os.Mkdir(empty, 0o755); err != nil {
				return err
			}
			spec.SourceDir = empty
		}
		if len(op.Sources) > 0 {
			spec.Op = op
			if err := executor.Copy(ctx, spec); err != nil {
				return err
			}
		}
		for i, r := range remotes {
			unpack := c.unpack != nil && *c.unpack
			if err := r.copy(ctx, rf, op, filepath.Join(dir, fmt.Sprintf("remote-%d", i)), unpack); err != nil {
				return err
			}
		}
		for i, hd := range c.sd.SourceContents {
			hdDir := filepath.Join(dir, fmt.Sprintf("heredoc-%d", i))
			fname := path.Clean("/" + hd.Path)[1:]
			if fname == "" {
				fname = "heredoc"
			}
			f := filepath.Join(hdDir, fname)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(f, []byte(hd.Data), 0o644); err != nil {
				return fmt.Errorf("writing heredoc %s: %w", hd.Path, err)
			}
			if err := os.Chmod(f, 0o644); err != nil {
				return err
			}
			hop := op
			hop.Kind = "copy"
			hop.FromStage = false
			hop.Excludes = nil
			hop.Selection = copier.Selection{}
			hop.Verify, hop.Expect = false, nil
			hop.Sources = []string{"/" + fname}
			if err := executor.Copy(ctx, executor.CopySpec{Rootfs: rf, SourceDir: hdDir, Op: hop}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.history(msg, !s.lastEmpty, true)
	return nil
}

func (b *build) dispatchWorkdir(ctx context.Context, s *stage, c *instructions.WorkdirCommand, onbuild bool) error {
	wd, err := system.NormalizeWorkdir(s.workdir, c.Path, targetOS)
	if err != nil {
		return fmt.Errorf("normalizing workdir: %w", err)
	}
	s.workdir = wd
	s.img.Config.WorkingDir = wd
	if wd == "/" {
		s.history("WORKDIR "+wd, false, false)
		return nil
	}
	k := newStepKey("workdir", s.key)
	k.add("path", wd)
	k.add("user", s.img.Config.User)
	err = b.runStep(ctx, s, s.stepName(wordDisplay(s, c.String()), onbuild), k, func(ctx context.Context, log progress.Step, rf executor.Rootfs) error {
		return executor.Copy(ctx, executor.CopySpec{Rootfs: rf, Op: copier.Op{Kind: "mkdir", Dest: wd, User: s.img.Config.User}})
	})
	if err != nil {
		return err
	}
	s.history("WORKDIR "+wd, !s.lastEmpty, false)
	return nil
}

// pathRelativeToWorkingDir resolves a COPY destination against WORKDIR,
// keeping a trailing slash (it means "into this directory").
func pathRelativeToWorkingDir(wd, p string) (string, error) {
	if system.IsAbs(p, targetOS) {
		return system.NormalizePath("/", p, targetOS, true)
	}
	if p == "." || p == "" {
		p = "./"
	}
	return system.NormalizePath(wd, p, targetOS, true)
}

// suggestStage says which stage name is closest to ref, if any is close.
func suggestStage(ref string, names []string) string {
	best, bestD := "", 1<<30
	for _, n := range names {
		if d := levenshtein(strings.ToLower(ref), n); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" && bestD <= max(2, len(ref)/3) {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	if len(names) > 0 {
		return fmt.Sprintf(" (stages: %s)", strings.Join(names, ", "))
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// firstLine is the first Dockerfile line of a location.
func firstLine(loc []bkparser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// addMountPointDirs leaves /dev, /proc and /sys in a RUN's layer when the
// image had none of them: BuildKit's runtime creates them as mount points
// on the image and they stay in its layer, so an image built on a bare
// rootfs has them there too.
func (b *build) addMountPointDirs(rf executor.Rootfs) error {
	for _, name := range []string{"dev", "proc", "sys"} {
		if _, err := os.Lstat(filepath.Join(rf.Upper, name)); err == nil {
			continue
		}
		if b.inLowers(rf.Lowers, name) {
			continue
		}
		if err := os.Mkdir(filepath.Join(rf.Upper, name), 0o755); err != nil {
			return fmt.Errorf("adding /%s to the layer: %w", name, err)
		}
		if err := os.Chmod(filepath.Join(rf.Upper, name), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// topEntry is what a layer has at a top-level name.
type topEntry uint8

const (
	topAbsent   topEntry = iota + 1
	topPresent           // an entry
	topWhiteout          // a whiteout: deleted below
)

// inLowers reports whether a top-level name exists in the merged view of
// overlay-format lowers (top-most first): the first lower that has it
// decides, and a whiteout (char device 0:0) there means it was deleted.
// Layers do not change once stored: what each has is looked up once per
// build, and a step on 30 layers no longer lstats 90 paths.
func (b *build) inLowers(lowers []string, name string) bool {
	for _, l := range lowers {
		switch b.topEntry(l, name) {
		case topWhiteout:
			return false
		case topPresent:
			return true
		}
	}
	return false
}

func (b *build) topEntry(layer, name string) topEntry {
	key := [2]string{layer, name}
	b.topMu.Lock()
	e, ok := b.tops[key]
	b.topMu.Unlock()
	if ok {
		return e
	}
	fi, err := os.Lstat(filepath.Join(layer, name))
	switch {
	case err != nil:
		e = topAbsent
	case fi.Mode()&os.ModeCharDevice != 0 && fi.Sys().(*syscall.Stat_t).Rdev == 0:
		e = topWhiteout
	default:
		e = topPresent
	}
	b.topMu.Lock()
	if b.tops == nil {
		b.tops = map[[2]string]topEntry{}
	}
	b.tops[key] = e
	b.topMu.Unlock()
	return e
}

// lazyLayers describes ls without reading their bytes: stored layers as
// stored, the others lazy.
func lazyLayers(store *cache.Store, ls []v1.Layer) ([]cache.LayerInfo, error) {
	out := make([]cache.LayerInfo, len(ls))
	for i, l := range ls {
		diffID, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		if info, ok, err := store.LayerByDiffID(diffID); err == nil && ok {
			out[i] = info
			continue
		}
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		size, err := l.Size()
		if err != nil {
			return nil, err
		}
		mt, err := l.MediaType()
		if err != nil {
			return nil, err
		}
		out[i] = cache.LayerInfo{DiffID: diffID, Digest: d, Size: size, MediaType: mt, Remote: l}
	}
	return out, nil
}

func anyLazy(layers []cache.LayerInfo) bool {
	return slices.ContainsFunc(layers, cache.LayerInfo.Lazy)
}

// materialize fetches the lazy layers a step that runs needs, showing the
// download on its progress.
func (b *build) materialize(ctx context.Context, layers []cache.LayerInfo, log progress.Step) ([]cache.LayerInfo, error) {
	if !anyLazy(layers) {
		return layers, nil
	}
	ctx, span := trace.Start(ctx, "fetch lazy layers")
	defer span.End()
	out, err := b.opt.Store.Materialize(ctx, layers, func(l v1.Layer) v1.Layer { return progress.WatchLayer(log, l) })
	if err != nil {
		return nil, fmt.Errorf("fetching the layers this step runs on: %w (they come from the base image or from --cache-from; if a cache is damaged, build once without that --cache-from: --cache-to then replaces it)", err)
	}
	return out, nil
}
