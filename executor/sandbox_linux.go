package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/executor/stepinit"
	"github.com/kiln-build/kiln/trace"
)

// sandboxArg is the hidden argv[1] that makes Init run the sandbox child.
// An argument rather than an environment variable: the child's environment
// is empty, and argv is what shows in /proc/1/cmdline inside the sandbox.
const sandboxArg = stepinit.SandboxArg

const defaultHostname = "buildkitsandbox"

// volatileUnsupported is set once a child reports that the kernel refused
// overlay's "volatile" option (before Linux 5.10), so that later steps do
// not pay for the failed mount again.
var volatileUnsupported atomic.Bool

// childSpec is what the parent sends the sandbox child on fd 3: a RUN
// child (kiln-init, or kiln re-executed) reads the stepinit.Spec in it, a
// copy child the copy's fields as well.
type childSpec struct {
	stepinit.Spec

	stdin *os.File // RunSpec.Stdin, handed to the child as its fd 0
	netns *os.File // handed to the child as netnsFD
	// net is the build network the child joins, which may still be
	// starting: the child mounts its root once it is up.
	net *Network

	SourceDir string          `json:"sourceDir,omitempty"`
	Source    stepinit.Rootfs `json:"source"`
	Op        copier.Op       `json:"op"`
}

// placement is the parent's second message to a RUN child.
type placement = stepinit.Placement

// childMsg is one report from the child on fd 4.
type childMsg = stepinit.Msg

// Init runs the sandbox child when this process is one, and never returns
// in that case. It must be the first thing main (or TestMain) does: the
// sandbox re-executes the current binary when kiln was built without
// kiln-init, and for COPY, ADD and WORKDIR steps.
func Init() {
	if len(os.Args) < 2 || os.Args[1] != sandboxArg {
		return
	}
	if len(os.Args) > 2 && os.Args[2] == "copy" {
		os.Exit(copyChildMain())
	}
	os.Exit(stepinit.Main())
}

// Run runs one RUN step in a fresh sandbox over spec.Rootfs. A command that
// exits non-zero or is killed yields an *ExitError.
func Run(ctx context.Context, spec RunSpec) (err error) {
	if err := spec.Sandbox.Check(); err != nil {
		return fmt.Errorf("running step: %w", err)
	}
	if len(spec.Args) == 0 {
		return errors.New("running step: empty command")
	}
	if spec.Rootfs.Upper != "" && spec.Rootfs.Work == "" {
		return errors.New("running step: rootfs has an upper dir but no work dir")
	}
	for _, f := range spec.Files {
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) == "/dev" || filepath.Clean(f.Path) == "/" {
			return fmt.Errorf("running step: file path %q must be absolute, below / and /dev", f.Path)
		}
	}
	for _, m := range spec.Mounts {
		if err := checkMount(m); err != nil {
			return fmt.Errorf("running step: %w", err)
		}
	}
	insecure := false
	switch spec.Security {
	case "", "sandbox":
	case "insecure":
		if !spec.Sandbox.Allows(EntitlementInsecure) {
			return errors.New("RUN --security=insecure needs --allow " + EntitlementInsecure)
		}
		insecure = true
	default:
		return fmt.Errorf("running step: unknown security mode %q (want sandbox or insecure)", spec.Security)
	}
	flags := uintptr(runCloneflags)
	hostname := spec.Hostname
	if hostname == "" {
		hostname = defaultHostname
	}
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	cs := childSpec{Spec: stepinit.Spec{
		Mode:     "run",
		Rootfs:   stepinit.Rootfs(spec.Rootfs),
		Args:     spec.Args,
		Env:      spec.Env,
		Cwd:      cwd,
		User:     spec.User,
		Hostname: hostname,
	}}
	cs.Insecure = insecure
	setRunFlags(spec.Sandbox, &cs.Spec)
	cs.Stubs = spec.Stubs.planFor(spec.Rootfs.Lowers)
	for _, f := range spec.Files {
		cs.Files = append(cs.Files, stepinit.File(f))
	}
	for _, m := range spec.Mounts {
		cs.Mounts = append(cs.Mounts, stepinit.Mount(m))
	}
	_, netSpan := trace.Start(ctx, "sandbox: network")
	netFlags, releaseNet, err := prepareNetwork(ctx, spec, &cs)
	netSpan.End()
	defer releaseNet()
	if err != nil {
		return fmt.Errorf("running step: %w", err)
	}
	flags |= netFlags
	// A child started ahead by the build's Warm serves the step when it
	// was started as this step would start one: an interactive step, or
	// one whose output goes to two writers, starts its own.
	var (
		warm    *warmChild
		warmKey warmKey
		cg      *stepCgroup
		g       guards
	)
	useWarm := spec.Warm != nil && spec.Stdin == nil && sameWriter(spec.Stdout, spec.Stderr)
	if useWarm {
		warmKey = newWarmKey(flags, cs.netns, spec.Sandbox, insecure)
		// A child is started with the prelude its key implies: it must
		// be this step's.
		useWarm = warmKey.pre == cs.Prelude
	}
	if useWarm {
		_, warmSpan := trace.Start(ctx, "sandbox: take the warm child")
		warm = spec.Warm.take(warmKey)
		warmSpan.End()
	}
	if warm != nil {
		cg, g = warm.c.cg, warm.g
	} else {
		_, cgSpan := trace.Start(ctx, "sandbox: cgroup")
		cg, g, err = newStepCgroup(spec.Sandbox, insecure)
		cgSpan.End()
		if err != nil {
			return fmt.Errorf("running step: %w", err)
		}
	}
	if useWarm {
		// The next steps' children start while this one runs.
		spec.Warm.fill(warmKey, spec.Sandbox, insecure, warmDepth)
	}
	cs.Guards = g
	runCtx := ctx
	if d := spec.Sandbox.StepTimeout; d > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, d, errStepTimeout)
		defer cancel()
	}
	if spec.Stdin != nil {
		cs.Interactive, cs.stdin = true, spec.Stdin
	}
	var msgs []childMsg
	if warm != nil {
		msgs, err = warm.serve(runCtx, cs, spec.Stdout)
	} else {
		msgs, err = runChild(runCtx, cs, flags, spec.Stdout, spec.Stderr, cg)
	}
	for _, m := range msgs {
		if m.Stubs != nil {
			spec.Stubs.remember(m.Stubs, spec.Rootfs.Lowers)
		}
	}
	if cg != nil {
		// Once the sandbox and all its processes are gone: a warm child
		// may still be exiting (child.serve).
		defer func() {
			if warm != nil {
				warm.c.afterExit(func() { cg.remove() })
				return
			}
			_, span := trace.Start(ctx, "sandbox: remove cgroup")
			defer span.End()
			if rerr := cg.remove(); rerr != nil && err == nil {
				err = fmt.Errorf("running step: %w", rerr)
			}
		}()
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case context.Cause(runCtx) == errStepTimeout:
		return &ExitError{Code: 137, Signal: "KILL", Killed: true, Reason: fmt.Sprintf("timed out after %v (--step-timeout)", spec.Sandbox.StepTimeout)}
	}
	var last childMsg
	if len(msgs) > 0 {
		last = msgs[len(msgs)-1]
	}
	failed := err != nil || last.Exit == nil || *last.Exit != 0
	if failed && cg != nil && cg.oomKilled() {
		// Whoever the OOM killer chose (the command, one of its children,
		// or the init itself), the step ran out of memory.
		limit := "no limit"
		if cg.memory > 0 {
			limit = "limit " + FormatBytes(cg.memory)
		}
		return &ExitError{Code: 137, Signal: "KILL", Killed: true, Reason: "out of memory (" + limit + ")"}
	}
	if err != nil {
		return err
	}
	switch {
	case last.Error != "":
		return errors.New(last.Error)
	case last.Exit == nil:
		return errors.New("running step: sandbox reported no exit status")
	case *last.Exit != 0 || last.Reason != "":
		ee := &ExitError{Code: *last.Exit, Signal: last.Signal, Reason: last.Reason}
		if *last.Exit != 0 && cg != nil && cg.pidsLimitHit() {
			ee.PidsLimit = cg.pids
		}
		return ee
	}
	return nil
}

// errStepTimeout is the cause of a step's context ending at its timeout.
var errStepTimeout = errors.New("step timeout")

// Copy runs one COPY, ADD or WORKDIR step: copier.Do in a sandbox child that
// has the destination overlay mounted read-write and, for COPY --from, the
// source mounted read-only.
func Copy(ctx context.Context, spec CopySpec) error {
	if spec.Rootfs.Upper == "" || spec.Rootfs.Work == "" {
		return errors.New("copying: destination rootfs needs an upper and a work dir")
	}
	cs := childSpec{
		Spec:      stepinit.Spec{Mode: "copy", Rootfs: stepinit.Rootfs(spec.Rootfs)},
		SourceDir: spec.SourceDir,
		Source:    stepinit.Rootfs(spec.Source),
		Op:        spec.Op,
	}
	// A Go runtime crash in the child is the only thing it writes; keep a
	// bounded amount for the error.
	var stderr limitedBuffer
	msgs, err := runChild(ctx, cs, syscall.CLONE_NEWNS, nil, &stderr, nil)
	if err != nil {
		if stderr.Len() > 0 {
			return fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return err
	}
	if last := msgs[len(msgs)-1]; last.Error != "" {
		return copierError(last)
	}
	return nil
}

// runCloneflags are the namespaces of every RUN sandbox.
const runCloneflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS

// runChild starts the sandbox child, sends it cs, and collects its reports.
// On success the returned slice ends with the Done report. Whatever
// happens, the step directory is gone when it returns: the child's mounts
// died with its mount namespace when it exited.
//
// With a cgroup, the child is placed in it before it reads its spec, and
// so before it starts anything; on cancel every process in it is killed.
func runChild(ctx context.Context, cs childSpec, cloneflags uintptr, stdout, stderr io.Writer, cg *stepCgroup) (msgs []childMsg, err error) {
	if cs.Mode == "run" && cloneflags&runCloneflags != runCloneflags {
		// The RUN child sets the hostname and mounts: in the host's
		// namespaces that would change the host.
		return nil, errors.New("running step: the sandbox needs its own mount, PID, IPC and UTS namespaces")
	}
	_, startSpan := trace.Start(ctx, "sandbox: start")
	c, err := startChild(ctx, childStart{mode: cs.Mode, cloneflags: cloneflags, netns: cs.netns, stdin: cs.stdin, stdout: stdout, stderr: stderr, cg: cg})
	startSpan.End()
	if err != nil {
		return nil, err
	}
	return c.serve(ctx, cs, nil)
}

// childStart is what a sandbox child is started with: everything but its
// spec, which it reads once started.
type childStart struct {
	mode           string // "run" or "copy"
	cloneflags     uintptr
	netns, stdin   *os.File
	stdout, stderr io.Writer
	cg             *stepCgroup
}

// child is a started sandbox child waiting for its spec.
type child struct {
	cmd         *exec.Cmd
	cg          *stepCgroup
	specW, resR *os.File
	placeErr    error // placing it in its cgroup, if that failed
	placed      bool  // place has run
	// placing, when set, is closed once place has run in the
	// background (a child started ahead).
	placing      chan struct{}
	bornInCgroup bool
	// prelude is the Prelude the child was sent when it started (a
	// child started ahead of its step); nil until serve sends one.
	prelude *stepinit.Prelude

	exitMu sync.Mutex
	onExit []func()      // what waits for it to be gone
	gone   chan struct{} // closed once it is reaped and onExit has run
}

// exiting are the children whose step is over and who are still exiting
// (serve's early return). Their namespaces still hold their mounts, the
// overlay on the step's scratch directory among them: what removes such
// a directory, or the step's cgroup, waits for them (WaitSandboxExits).
// A later step may mount the layer at once: the layer is a new
// directory, which the entries of the upper dir were moved into
// (cache.Store.CommitDirWith), not the upper dir that overlayfs marks in
// use until the old overlay is gone.
var exiting struct {
	mu sync.Mutex
	m  map[*child]struct{}
	// after are the clean-ups afterExits runs once the children exiting
	// when it was called are gone, each closed once done.
	after map[chan struct{}]struct{}
}

// afterExits runs f in the background once every child exiting now is
// gone; WaitSandboxExits waits for it too.
func afterExits(f func()) {
	done := make(chan struct{})
	exiting.mu.Lock()
	if exiting.after == nil {
		exiting.after = map[chan struct{}]struct{}{}
	}
	exiting.after[done] = struct{}{}
	cs := exitingNow()
	exiting.mu.Unlock()
	go func() {
		for _, c := range cs {
			<-c.gone
		}
		f()
		exiting.mu.Lock()
		delete(exiting.after, done)
		exiting.mu.Unlock()
		close(done)
	}()
}

// exitingNow lists the children exiting; exiting.mu is held.
func exitingNow() []*child {
	cs := make([]*child, 0, len(exiting.m))
	for c := range exiting.m {
		cs = append(cs, c)
	}
	return cs
}

// exitLater reaps c in the background, once it is over for its step.
func (c *child) exitLater() {
	exiting.mu.Lock()
	if exiting.m == nil {
		exiting.m = map[*child]struct{}{}
	}
	exiting.m[c] = struct{}{}
	exiting.mu.Unlock()
	go func() {
		c.wait()
		exiting.mu.Lock()
		delete(exiting.m, c)
		exiting.mu.Unlock()
	}()
}

// wait reaps c, and runs what waited for it to be gone.
func (c *child) wait() error {
	err := c.cmd.Wait()
	c.exited()
	return err
}

// exited runs what waited for c to be gone, then says it is.
func (c *child) exited() {
	c.exitMu.Lock()
	fs := c.onExit
	c.onExit = nil
	c.exitMu.Unlock()
	for _, f := range fs {
		f()
	}
	close(c.gone)
}

// afterExit runs f once c is gone: now, or when exitLater has reaped it.
func (c *child) afterExit(f func()) {
	c.exitMu.Lock()
	select {
	case <-c.gone:
	default:
		c.onExit = append(c.onExit, f)
		c.exitMu.Unlock()
		return
	}
	c.exitMu.Unlock()
	f()
}

// WaitSandboxExits waits until the sandboxes of the steps that are over
// are gone (their namespaces torn down, their cgroups handed to removal),
// with the clean-ups that waited for them (afterExits): for what removes
// a step's directories, and for kiln before it exits.
func WaitSandboxExits() { waitExits(context.Background()) }

// waitExits waits until every child that was exiting when it was called
// is gone, with what waited for it.
func waitExits(ctx context.Context) {
	exiting.mu.Lock()
	cs := exitingNow()
	var after []chan struct{}
	for ch := range exiting.after {
		after = append(after, ch)
	}
	exiting.mu.Unlock()
	if len(cs) == 0 && len(after) == 0 {
		return
	}
	_, span := trace.Start(ctx, "sandbox: wait for the last step's sandbox to exit")
	defer span.End()
	for _, c := range cs {
		<-c.gone
	}
	for _, ch := range after {
		<-ch
	}
}

// sendPrelude sends a RUN child the prelude of the steps it may serve,
// so that it stages their sandbox while it waits (stepinit.Prelude).
func (c *child) sendPrelude(pre stepinit.Prelude) error {
	if err := json.NewEncoder(c.specW).Encode(pre); err != nil {
		return fmt.Errorf("sending sandbox prelude: %w", err)
	}
	c.prelude = &pre
	return nil
}

// startChild starts a sandbox child and places it in its cgroup; it then
// waits for its spec on fd 3.
func startChild(ctx context.Context, st childStart) (c *child, err error) {
	// No descriptor of ours reaches the child but those passed below.
	if err := stepinit.CloseExtraFDs(); err != nil {
		return nil, err
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating spec pipe: %w", err)
	}
	defer specR.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		specW.Close()
		return nil, fmt.Errorf("creating report pipe: %w", err)
	}
	defer resW.Close()
	defer func() {
		if err != nil {
			specW.Close()
			resR.Close()
		}
	}()

	// A RUN child is kiln-init when kiln carries it; a copy child, and a
	// RUN child of a kiln built without kiln-init, is kiln itself. Both
	// are "kiln" in /proc/1/cmdline: kiln-init is kiln's own init.
	prog := "/proc/self/exe"
	if st.mode == "run" {
		if p, _ := initProgram(); p != "" {
			prog = p
		}
	}
	cg := st.cg
	newCmd := func(cgroupFD int) *exec.Cmd {
		cmd := exec.CommandContext(ctx, prog, sandboxArg, st.mode)
		cmd.Args[0] = "kiln"
		// The child must not inherit kiln's environment (the command gets
		// exactly the step's Env). GOMAXPROCS spares the child's Go runtime
		// its cgroup probing at startup, a few hundred microseconds per
		// step; containermaxprocs=0 keeps it from holding the host's
		// cgroup CPU files open for its whole life (Go 1.25+): no
		// descriptor of the host's cgroups belongs in a sandbox's PID 1.
		procs := runtime.GOMAXPROCS(0)
		if st.mode == "run" {
			// A RUN's init works on one thread (its mounts, then the
			// command): more Ps would only wake other CPUs.
			procs = 1
		}
		cmd.Env = []string{"GOMAXPROCS=" + strconv.Itoa(procs), "GODEBUG=containermaxprocs=0"}
		if st.mode == "run" {
			// A RUN's init allocates little, once, and then waits for the
			// command: no collection should stall its set-up.
			cmd.Env = append(cmd.Env, "GOGC=off")
		}
		cmd.Stdout = st.stdout
		if st.stdin != nil {
			cmd.Stdin = st.stdin
		}
		cmd.Stderr = st.stderr
		cmd.ExtraFiles = []*os.File{specR, resW} // fds 3 and 4
		if st.netns != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, st.netns) // netnsFD
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags: st.cloneflags,
			// If kiln dies, its sandbox must not outlive it; killing PID 1
			// of the namespace takes every process in it along.
			Pdeathsig: syscall.SIGKILL,
		}
		if cgroupFD >= 0 {
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = cgroupFD
		}
		if cg != nil {
			cmd.Cancel = func() error {
				err := cmd.Process.Kill()
				cg.kill()
				return err
			}
		}
		return cmd
	}
	// On cgroup v2 the child is born in the step's cgroup (clone3 with
	// CLONE_INTO_CGROUP, Linux 5.7): no migration to wait for.
	var cmd *exec.Cmd
	bornInCgroup := false
	// start starts cmd, once more as kiln itself if the kernel would not
	// execute kiln-init.
	start := func(cgroupFD int) (*exec.Cmd, error) {
		cmd := newCmd(cgroupFD)
		err := cmd.Start()
		if err != nil && prog != "/proc/self/exe" && initExecFailed(err) {
			prog = "/proc/self/exe"
			cmd = newCmd(cgroupFD)
			err = cmd.Start()
		}
		return cmd, err
	}
	if fd := cg.cloneFD(); fd >= 0 {
		defer unix.Close(fd)
		var err error
		cmd, err = start(fd)
		switch {
		case err == nil:
			bornInCgroup = true
		case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.E2BIG):
			cmd = nil // an older kernel: migrate the child instead
		default:
			return nil, fmt.Errorf("starting sandbox: %w", err)
		}
	}
	if cmd == nil {
		var err error
		if cmd, err = start(-1); err != nil {
			if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
				// Namespaces and overlay mounts need root, or root of a
				// user namespace, which EnterUserNS could not set up.
				if rerr := RootlessError(); rerr != nil {
					return nil, fmt.Errorf("starting sandbox: %w", rerr)
				}
				return nil, fmt.Errorf("starting sandbox: %w (kiln needs root, or a user namespace of its own for a rootless build)", err)
			}
			return nil, fmt.Errorf("starting sandbox: %w", err)
		}
	}
	return &child{cmd: cmd, cg: cg, specW: specW, resR: resR, bornInCgroup: bornInCgroup, gone: make(chan struct{})}, nil
}

// place moves the child into its cgroup, unless it was born there. Until
// it is placed, a RUN child sets up its root but does not start the
// command.
func (c *child) place() {
	c.placed = true
	if c.cg != nil && !c.bornInCgroup {
		c.placeErr = c.cg.add(c.cmd.Process.Pid)
	}
}

// kill ends a child that will not serve a step, and reaps it.
func (c *child) kill() {
	c.cmd.Process.Kill()
	c.specW.Close()
	c.resR.Close()
	c.wait()
}

// serve sends the child cs and collects its reports until it exits. Until
// the child's init reports when it starts the command, its root set-up
// (mounts, pivot_root) and the command are one span. done, when set, is
// waited for after the child has exited (the copying of its output).
func (c *child) serve(ctx context.Context, cs childSpec, done func()) (msgs []childMsg, err error) {
	cmd := c.cmd
	defer c.specW.Close()
	defer c.resR.Close()
	fail := func(err error) ([]childMsg, error) {
		cmd.Process.Kill()
		c.wait()
		if done != nil {
			done()
		}
		return nil, err
	}
	cs.Volatile = !volatileUnsupported.Load()
	if cs.Rootfs.Work != "" {
		// A step may mount the same upper dir more than once (a COPY with
		// several heredocs); overlayfs refuses a work dir left "incompat"
		// by an earlier volatile mount, and nothing in it outlives a mount.
		if err := resetDir(cs.Rootfs.Work); err != nil {
			return fail(fmt.Errorf("resetting overlay work dir: %w", err))
		}
	}
	if c.prelude != nil {
		// Started ahead: its tmpfs is mounted already.
		cs.StepDir = c.prelude.StepDir
	} else {
		// The step directory is where the child mounts its tmpfs of mount
		// points; on the host it stays empty. Next to Upper, because the
		// caller owns that directory and cleans it up if we crash; a
		// read-only view has no Upper.
		parent := os.TempDir()
		if cs.Rootfs.Upper != "" {
			parent = filepath.Dir(cs.Rootfs.Upper)
		}
		cs.StepDir, err = os.MkdirTemp(parent, ".kiln-step-")
		if err != nil {
			return fail(fmt.Errorf("creating step directory: %w", err))
		}
		defer func() {
			// By now the child's mount namespace, and the tmpfs with it,
			// is gone: an rmdir is enough.
			rerr := os.Remove(cs.StepDir)
			if rerr != nil {
				rerr = os.RemoveAll(cs.StepDir)
			}
			if rerr != nil && err == nil {
				err = fmt.Errorf("removing step directory: %w", rerr)
			}
		}()
	}
	withPrelude := cs.Mode == "run" && c.prelude == nil

	childName := "sandbox: set up + run"
	if cs.Mode != "run" {
		childName = "sandbox: set up + copy"
	}
	_, childSpan := trace.Start(ctx, childName)
	defer childSpan.End()

	// The spec goes to the child before anything else: it reads it before
	// it does anything with its step. A RUN child then sets up its root
	// while we move it into the step's cgroup, and waits for the placement
	// message before it starts the command: the first cgroup migration
	// after a quiet spell waits for an RCU grace period (milliseconds),
	// which this overlaps with the setup.
	var msg bytes.Buffer
	enc := json.NewEncoder(&msg)
	if withPrelude {
		if err := enc.Encode(cs.Prelude); err != nil {
			return fail(fmt.Errorf("encoding sandbox prelude: %w", err))
		}
	}
	if err := enc.Encode(cs); err != nil {
		return fail(fmt.Errorf("encoding sandbox spec: %w", err))
	}
	placed := make(chan bool, 1)
	writeErr := make(chan error, 1)
	finish := func(err error, ok bool) {
		if err == nil && cs.Mode == "run" && ok {
			// The child may be gone already (a setup error): not ours
			// to report.
			_, _ = c.specW.Write(placedMsg)
		}
		c.specW.Close()
		writeErr <- err
	}
	// Written here, at once, when it fits in the pipe's buffer: a
	// goroutine would first have to be scheduled, which can mean waking
	// the other CPU (hundreds of microseconds on a virtual machine) on
	// every step. A larger spec (a long Env) is written while the child
	// reads it.
	//
	// A RUN child that joins the build network mounts its root once the
	// network is up (MountReady): the first step's reads its spec and sets
	// up what comes before while the network helper starts. A network
	// that does not come up fails the step.
	var netErr error
	send := func() error {
		if _, err := c.specW.Write(msg.Bytes()); err != nil || cs.Mode != "run" {
			return err
		}
		if cs.net != nil {
			if netErr = cs.net.wait(ctx); netErr != nil {
				return nil
			}
		}
		_, err := c.specW.Write(mountReadyMsg)
		return err
	}
	inline := msg.Len() <= pipeRoom(c.specW)
	var inlineErr error
	if inline {
		if inlineErr = send(); netErr != nil {
			return fail(netErr)
		}
	} else {
		go func() {
			err := send()
			if netErr != nil {
				cmd.Process.Kill()
			}
			finish(err, <-placed)
		}()
	}
	if c.placing != nil {
		<-c.placing
	} else if !c.placed {
		c.place()
	}
	if inline {
		finish(inlineErr, c.placeErr == nil)
	} else {
		placed <- c.placeErr == nil
	}
	if c.placeErr != nil {
		cmd.Process.Kill()
		c.wait()
		<-writeErr
		if done != nil {
			done()
		}
		return nil, c.placeErr
	}
	// A child started ahead of its step was started under the build's
	// context: the step's own ends it here.
	stop := context.AfterFunc(ctx, func() {
		cmd.Process.Kill()
		if c.cg != nil {
			c.cg.kill()
		}
	})
	defer stop()
	readDone := make(chan struct{})
	// reported is closed once the child has reported its step over: a
	// RUN child has then ended every process of its sandbox and closed its
	// output (stepinit's runInit).
	reported := make(chan struct{})
	go func() {
		defer close(readDone)
		dec := json.NewDecoder(c.resR)
		for {
			var m childMsg
			if dec.Decode(&m) != nil {
				return
			}
			if m.NoVolatile {
				volatileUnsupported.Store(true)
			}
			msgs = append(msgs, m)
			if m.Done {
				// Nothing comes after the last report: no need to wait for
				// the end of the pipe, which comes with the child's exit.
				close(reported)
				return
			}
		}
	}()

	var waitErr error
	early := false
	if done != nil && cs.Mode == "run" {
		// A child whose output we copy ourselves is over for the step
		// once it reports so: the kernel tears its namespaces down (half
		// a millisecond and more) while the step commits its layer and
		// the next one starts. Its exit is waited for in the background
		// (exiting).
		select {
		case <-reported:
			early = true
		case <-readDone:
		}
	}
	if early {
		c.exitLater()
	} else {
		waitErr = c.wait()
	}
	<-readDone
	if done != nil {
		done()
	}
	childSpan.End()
	werr := <-writeErr
	if ctx.Err() != nil {
		return msgs, ctx.Err()
	}
	if netErr != nil {
		return msgs, netErr
	}
	if len(msgs) == 0 || !msgs[len(msgs)-1].Done {
		if werr != nil {
			return msgs, fmt.Errorf("sending spec to sandbox: %w", werr)
		}
		// Most likely main does not call executor.Init first, so the
		// re-executed binary did something else with our arguments.
		return msgs, fmt.Errorf("sandbox exited without reporting (is executor.Init called first in main?): %v", waitErr)
	}
	return msgs, nil
}

// checkMount refuses a RUN --mount that cannot be set up.
func checkMount(m Mount) error {
	if !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
		return fmt.Errorf("mount target %q must be absolute and below /", m.Target)
	}
	switch m.Type {
	case "bind":
		if !filepath.IsAbs(m.Source) {
			return fmt.Errorf("bind mount at %s: source %q must be an absolute host path", m.Target, m.Source)
		}
	case "tmpfs":
	case "layers":
		for _, p := range []string{m.Upper, m.Work, m.Stage} {
			if !filepath.IsAbs(p) {
				return fmt.Errorf("layers mount at %s: upper, work and stage must be absolute host paths", m.Target)
			}
		}
		if len(m.Lowers) == 0 {
			return fmt.Errorf("layers mount at %s: no layers", m.Target)
		}
	default:
		return fmt.Errorf("mount at %s: unknown type %q (want bind, tmpfs or layers)", m.Target, m.Type)
	}
	return nil
}

// mountReadyMsg and placedMsg are the MountReady and Placement
// messages, encoded.
var (
	mountReadyMsg = []byte(`{"mountReady":true}` + "\n")
	placedMsg     = []byte(`{"placed":true}` + "\n")
)

// pipeRoom is how much can be written to the empty pipe w without
// blocking, leaving room for a prelude the child may not have read yet;
// 0 when unknown. Pipes are 64 KiB unless a user's pipes exceed
// fs.pipe-user-pages-soft, when new ones get a single page.
func pipeRoom(w *os.File) int {
	rc, err := w.SyscallConn()
	if err != nil {
		return 0
	}
	size := 0
	rc.Control(func(fd uintptr) {
		size, _ = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0)
	})
	return max(size-4096, 0)
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// resetDir empties dir, keeping dir itself.
func resetDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
