package planner

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/trace"
)

// Cache mounts imported with --cache-from are restored ahead: once a step
// of a stage misses, every step after it in that stage (and in the stages
// built FROM it) misses too — their keys chain from its key — so the RUN
// steps among them will run, and the cache mounts they use are fetched
// and unpacked then, side by side with the lazy layers the missed step
// fetches, not when the RUN step gets its turn. A build whose steps all
// hit fetches nothing.
//
// Only mounts whose identity the Dockerfile spells without a variable are
// restored ahead (a variable is expanded with the environment of its
// step's time); a from= mount is filled from its stage, never from a
// seed. The waste is bounded: at most the imported layers of those
// mounts, fetched once, when the build fails before their step or, in the
// rare case that a later step is a hit all the same (a source with a
// record for a later key but not for the missed one), for a mount no step
// then uses. The instance is made exactly as the step would make it,
// under its lock (cache.Store.PrepareCacheMount); the step waits for that
// before taking the mount.

// seedsAhead is the build's restoring of cache mounts ahead of their steps.
type seedsAhead struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	once    sync.Once
	byStage [][][]aheadMount // stage → command → its cache mounts, if literal

	mu      sync.Mutex
	started map[string]*seedFetch // by cache mount identity

	// slot lets one mount be restored at a time: the aim is to have them
	// ready when the lazy layers are, and the layers' unpacking needs the
	// cores more than the mounts need to be done early.
	slot chan struct{}
}

// aheadMount is a RUN --mount=type=cache whose identity is known before
// its step's words are expanded.
type aheadMount struct {
	id      string
	sharing cache.CacheSharing
	init    cache.CacheMountInit
}

// seedFetch is one mount being restored ahead.
type seedFetch struct {
	done   chan struct{}
	failed error // the seed could not be applied: the instance is empty
	warned bool
}

// startAhead prepares restoring mounts ahead for a build whose context is
// ctx; the returned function cancels what no step waited for and waits
// until it has stopped (a half-restored instance is never left behind).
func (b *build) startAhead(ctx context.Context) (stop func()) {
	b.ahead.ctx, b.ahead.cancel = context.WithCancel(ctx)
	b.ahead.slot = make(chan struct{}, 1)
	return func() {
		b.ahead.cancel()
		b.ahead.wg.Wait()
	}
}

// restoreAhead is called when a step of s misses and will run: it starts
// restoring the imported cache mounts of the RUN steps after it.
func (b *build) restoreAhead(s *stage) {
	src, ok := b.opt.Remote.(CacheMountSource)
	if !ok || b.ahead.ctx == nil || b.opt.Store == nil {
		return
	}
	b.ahead.once.Do(func() { b.ahead.byStage = b.literalCacheMounts() })
	if len(b.ahead.byStage) == 0 {
		return
	}
	for _, t := range b.stages {
		from := 0
		switch {
		case t == s:
			from = s.next
		case !b.reach[t] || !builtOn(t, s):
			continue
		}
		if t.index >= len(b.ahead.byStage) || t.replaced {
			continue
		}
		cmds := b.ahead.byStage[t.index]
		for i := from; i < len(cmds); i++ {
			for _, m := range cmds[i] {
				if seed, ok := src.CacheMountLayers(m.id); ok && len(seed) > 0 {
					b.restoreMount(m, seed)
				}
			}
		}
	}
}

// builtOn reports whether t is built FROM s, directly or not.
func builtOn(t, s *stage) bool {
	for p := t.base; p != nil; p = p.base {
		if p == s {
			return true
		}
	}
	return false
}

// restoreMount starts restoring m from seed unless it is under way.
func (b *build) restoreMount(m aheadMount, seed []cache.LayerInfo) {
	b.ahead.mu.Lock()
	defer b.ahead.mu.Unlock()
	if b.ahead.started[m.id] != nil {
		return
	}
	if b.ahead.started == nil {
		b.ahead.started = map[string]*seedFetch{}
	}
	f := &seedFetch{done: make(chan struct{})}
	b.ahead.started[m.id] = f
	b.ahead.wg.Add(1)
	go func() {
		defer b.ahead.wg.Done()
		defer close(f.done)
		select {
		case b.ahead.slot <- struct{}{}:
			defer func() { <-b.ahead.slot }()
		case <-b.ahead.ctx.Done():
			return // the step restores it, if it runs
		}
		ctx, span := trace.Start(b.ahead.ctx, "restore cache mount ahead")
		span.SetString("id", m.id)
		init := m.init
		init.Seed = seed
		init.SeedFailed = func(err error) { f.failed = err }
		// Any other error leaves no instance: the step makes its own.
		err := b.opt.Store.PrepareCacheMount(ctx, m.id, m.sharing, init)
		span.SetError(err)
		if f.failed != nil {
			span.SetString("seed", f.failed.Error())
		}
		span.End()
	}()
}

// awaitAhead waits until cache mount id, if it is being restored ahead,
// is ready, and says on the step's output when its seed was not usable.
func (b *build) awaitAhead(ctx context.Context, id string, log progress.Step) error {
	b.ahead.mu.Lock()
	f := b.ahead.started[id]
	b.ahead.mu.Unlock()
	if f == nil {
		return nil
	}
	select {
	case <-f.done:
	default:
		// its download shows on no step: say what the step waits for
		fmt.Fprintf(log, "waiting for cache mount %q, being restored from --cache-from\n", id)
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.ahead.mu.Lock()
	warn := f.failed != nil && !f.warned
	f.warned = true
	b.ahead.mu.Unlock()
	if warn {
		warnSeed(log, id, f.failed)
	}
	return nil
}

// warnSeed says that the imported contents of cache mount id could not be
// used.
func warnSeed(log io.Writer, id string, err error) {
	fmt.Fprintf(log, "warning: cache mount %q from --cache-from is not used, the step starts with an empty one: %v\n", id, err)
}

// literalCacheMounts lists, for each command of each stage, the cache
// mounts of a RUN whose identity holds no variable. The Dockerfile is
// parsed again for it: a command's mounts are decoded by expanding its
// words, which the stage does when it dispatches it, and the parsed
// commands are the stages' own.
func (b *build) literalCacheMounts() [][][]aheadMount {
	if b.df == nil || len(b.df.Source) == 0 {
		return nil
	}
	df, err := parser.Parse(b.df.Name, b.df.Source)
	if err != nil || len(df.Stages) != len(b.stages) {
		return nil
	}
	out := make([][][]aheadMount, len(df.Stages))
	for i, st := range df.Stages {
		orig := b.df.Stages[i].Commands
		if len(st.Commands) != len(orig) {
			continue // not the Dockerfile the build runs
		}
		out[i] = make([][]aheadMount, len(st.Commands))
		for j, c := range st.Commands {
			run, ok := c.(*instructions.RunCommand)
			if !ok || firstLine(c.Location()) != firstLine(orig[j].Location()) {
				continue
			}
			out[i][j] = b.literalMounts(b.stages[i], run)
		}
	}
	return out
}

// unexpanded marks a word that holds a variable.
const unexpanded = "\x00"

// literalMounts decodes run's cache mounts with every word as written,
// keeping those whose id (or target, standing for it) holds no variable
// and that have no from=.
func (b *build) literalMounts(s *stage, run *instructions.RunCommand) []aheadMount {
	err := run.Expand(func(w string) (string, error) {
		if strings.Contains(w, "$") {
			return unexpanded + w, nil
		}
		return w, nil
	})
	if err != nil {
		return nil // a variable in a word that must be a number, …: the step decides
	}
	var out []aheadMount
	for _, m := range instructions.GetMounts(run) {
		if m.Type != instructions.MountTypeCache || m.From != "" || strings.Contains(m.CacheID+m.Target+m.Source, unexpanded) {
			continue
		}
		id := m.CacheID
		if id == "" {
			if !path.IsAbs(m.Target) {
				continue // joined to the WORKDIR of its step's time
			}
			id = m.Target
		}
		ident, init, _, err := b.cacheMountIdentity(context.Background(), s, m, id)
		if err != nil {
			continue
		}
		out = append(out, aheadMount{id: ident, sharing: cacheSharing(m), init: init})
	}
	return out
}
