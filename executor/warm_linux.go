package executor

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/kiln-build/kiln/executor/stepinit"
	"github.com/kiln-build/kiln/trace"
)

// Warm keeps RUN sandbox children started ahead of the steps that will use
// them. Starting a child is the fixed part of every RUN: the clone with its
// namespaces, the exec of kiln-init and its runtime start, the step's
// cgroup and, on cgroup v1, the move into it. The children of a build's
// next RUN steps are started while the current one runs, on the other
// core; a child then waits for its spec, which says what to mount and run.
// It is started exactly as the step would start it (same namespaces,
// network, cgroup settings and security); a step that needs anything else
// starts its own child as before.
//
// A Warm belongs to one build; Close ends the children nobody took.
type Warm struct {
	ctx context.Context // the build's: the children outlive the step that started them
	// tempDir makes dir, where every child mounts its step tmpfs, each
	// in its own mount namespace (on the host it stays empty); made on
	// first use, removed by Close once no child is left.
	tempDir func() (string, error)
	dir     string
	mu      sync.Mutex
	queue   []*warmChild // oldest first
	closed  bool
	// expect is how many RUN steps of the build's network the build has,
	// as far as it knows (0: unknown), and taken how many children steps
	// took: no more children are started than steps may come.
	expect, taken int
}

// Expect tells w how many RUN steps of the build's network the build
// has.
func (w *Warm) Expect(runs int) {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.expect = runs
	w.mu.Unlock()
}

// warmDepth is how many children a build keeps started ahead once its
// steps are running. The move into a cgroup v1 waits for an RCU grace
// period whenever no other move came within about one (the kernel's
// cgroup_threadgroup_rwsem): now and then 10-20 ms, more than a short
// step. Started one step further ahead, a child is most often ready
// anyway; with a single one ahead, a 30-step build waited for its next
// child 10-30 ms in all.
const warmDepth = 2

// NewWarm returns a Warm whose children live at most as long as ctx.
func NewWarm(ctx context.Context) *Warm { return NewWarmIn(ctx, nil) }

// NewWarmIn is NewWarm whose children's mount points are in a directory
// that tempDir makes (a store's scratch space, which the store empties
// after a crash); the Warm removes it. With a nil tempDir it is made in
// the system's temporary directory.
func NewWarmIn(ctx context.Context, tempDir func() (string, error)) *Warm {
	return &Warm{ctx: ctx, tempDir: tempDir}
}

// warmKey is what a child is started with, besides its spec.
type warmKey struct {
	cloneflags uintptr
	netns      *os.File
	sandbox    string // the build's Sandbox and the step's security
	// pre is the child's prelude but for StepDir, as Run makes it for a
	// step started with the rest of the key.
	pre stepinit.Prelude
}

func newWarmKey(cloneflags uintptr, netns *os.File, sb Sandbox, insecure bool) warmKey {
	return warmKey{
		cloneflags: cloneflags, netns: netns, sandbox: fmt.Sprintf("%+v insecure=%v", sb, insecure),
		pre: stepinit.Prelude{
			Insecure: insecure,
			NetNone:  cloneflags&syscall.CLONE_NEWNET != 0,
			JoinNet:  netns != nil,
			ShmSize:  sb.ShmSize,
		},
	}
}

// stepDir returns the directory where the children mount their step
// tmpfs, making it on first use. Called with w.mu held.
func (w *Warm) stepDir() (string, error) {
	if w.dir == "" {
		mk := w.tempDir
		if mk == nil {
			mk = func() (string, error) { return os.MkdirTemp("", "kiln-warm-") }
		}
		dir, err := mk()
		if err != nil {
			return "", fmt.Errorf("creating the sandboxes' step directory: %w", err)
		}
		w.dir = dir
	}
	return w.dir, nil
}

// warmChild is a child being started, or started, ahead of its step.
type warmChild struct {
	key   warmKey
	ready chan struct{} // closed once c, guards, out and err are set
	c     *child
	g     guards
	out   *os.File // the read end of the child's stdout and stderr
	err   error
}

// take returns the child started for key k, once it is started; nil if
// there is none, or it failed to start (the step then starts its own).
func (w *Warm) take(k warmKey) *warmChild {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	var wc *warmChild
	var stale []*warmChild
	w.taken++
	if len(w.queue) > 0 {
		wc, w.queue = w.queue[0], w.queue[1:]
		if wc.key != k {
			// Started for other steps: so are the ones after it.
			stale, w.queue = append([]*warmChild{wc}, w.queue...), nil
			wc = nil
		}
	}
	w.mu.Unlock()
	for _, s := range stale {
		s.discard()
	}
	if wc == nil {
		return nil
	}
	<-wc.ready
	if wc.err != nil {
		return nil
	}
	return wc
}

// fill starts children for key k in the background until depth of them
// are started or starting (no more than the steps still expected), unless
// the build is over. The children start one after the other: two clones
// at once would only contend.
func (w *Warm) fill(k warmKey, sb Sandbox, insecure bool, depth int) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.ctx.Err() != nil {
		return
	}
	if w.expect > 0 {
		depth = min(depth, w.expect-w.taken)
	}
	if len(w.queue) >= depth {
		return
	}
	dir, err := w.stepDir()
	if err != nil {
		return // the steps start their own children, and meet the error
	}
	var after chan struct{}
	if n := len(w.queue); n > 0 {
		after = w.queue[n-1].ready
	}
	for len(w.queue) < depth {
		wc := &warmChild{key: k, ready: make(chan struct{})}
		w.queue = append(w.queue, wc)
		go func(after chan struct{}) {
			defer close(wc.ready)
			if after != nil {
				<-after
			}
			wc.c, wc.g, wc.out, wc.err = startWarm(w.ctx, k, sb, insecure, dir)
		}(after)
		after = wc.ready
	}
}

// startWarm starts a RUN child for key k whose standard output and error
// are one pipe, as a step's are when both go to its log: the step copies
// it to its writers once it takes the child. The child stages its
// sandbox on a tmpfs at stepDir.
func startWarm(ctx context.Context, k warmKey, sb Sandbox, insecure bool, stepDir string) (*child, guards, *os.File, error) {
	_, span := trace.Start(ctx, "sandbox: start a warm child")
	defer span.End()
	_, cgSpan := trace.Start(ctx, "sandbox: warm child's cgroup")
	cg, g, err := newStepCgroup(sb, insecure)
	cgSpan.End()
	if err != nil {
		return nil, g, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		if cg != nil {
			cg.remove()
		}
		return nil, g, nil, err
	}
	_, startSpan := trace.Start(ctx, "sandbox: warm child's clone and exec")
	c, err := startChild(ctx, childStart{mode: "run", cloneflags: k.cloneflags, netns: k.netns, stdout: w, stderr: w, cg: cg})
	startSpan.End()
	w.Close()
	if err != nil {
		r.Close()
		if cg != nil {
			cg.remove()
		}
		return nil, g, nil, err
	}
	pre := k.pre
	pre.StepDir = stepDir
	if err := c.sendPrelude(pre); err != nil {
		c.kill()
		r.Close()
		if cg != nil {
			cg.remove()
		}
		return nil, g, nil, err
	}
	// The move waits for an RCU grace period now and then (see
	// warmDepth): in the background, so that neither the next child's
	// start nor the step that takes this one waits for it before the
	// command starts (child.serve).
	c.placing = make(chan struct{})
	go func() {
		defer close(c.placing)
		_, placeSpan := trace.Start(ctx, "sandbox: warm child's move into its cgroup")
		c.place()
		placeSpan.End()
	}()
	return c, g, r, nil
}

// serve runs the step cs in the child, its output copied to out.
func (wc *warmChild) serve(ctx context.Context, cs childSpec, out io.Writer) ([]childMsg, error) {
	if out == nil {
		out = io.Discard
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		// Until every process of the sandbox has closed it: they all die
		// with its PID 1.
		io.Copy(out, wc.out)
	}()
	return wc.c.serve(ctx, cs, func() {
		<-copied
		wc.out.Close()
	})
}

// discard ends a child that no step will take: it is killed at once,
// and reaped in the background (exitLater), after which its cgroup is
// handed to the background removal (the end of kiln waits for both).
func (wc *warmChild) discard() {
	<-wc.ready
	if wc.err != nil {
		return
	}
	c := wc.c
	c.cmd.Process.Kill()
	c.specW.Close()
	c.resR.Close()
	c.afterExit(func() {
		if c.placing != nil {
			<-c.placing
		}
		if c.cg != nil {
			c.cg.remove()
		}
		wc.out.Close()
	})
	c.exitLater()
}

// Close ends the children started for steps that never came, and
// removes the children's directory in the background once every child
// is reaped (afterExits, which kiln waits for before it exits): removing
// a directory that is a mount point in another mount namespace would
// unmount it there.
func (w *Warm) Close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.closed = true
	queue := w.queue
	w.queue = nil
	dir := w.dir
	w.mu.Unlock()
	for _, wc := range queue {
		wc.discard()
	}
	if dir != "" {
		afterExits(func() { os.Remove(dir) })
	}
}

// sameWriter reports whether a and b are the same writer, as a step's
// standard output and error are when both go to its log.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false // an incomparable writer
		}
	}()
	return a == b
}

// Prestart starts the children of a build's first RUN steps of the
// default network, once the build network's namespace exists
// (NewNetworkWarm): their start, and their moves into cgroups, then
// overlap the network helper's start and the pull of the base image
// instead of the steps. A second child is started for a build with more
// than one such step: its move comes right after the first's, while the
// kernel's lock is still quick to take, rather than when the first step
// starts, after the pull.
func (w *Warm) Prestart(net *Network, sb Sandbox) {
	if w == nil || net == nil || net.ns == nil {
		return
	}
	w.mu.Lock()
	depth := min(max(w.expect, 1), warmDepth)
	w.mu.Unlock()
	w.fill(newWarmKey(runCloneflags, net.ns, sb, false), sb, false, depth)
}
