package executor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/stepinit"
	"github.com/kiln-build/kiln/trace"
)

// netnsFD is where a RUN child finds the network namespace to join
// (childSpec.JoinNet): the third of its ExtraFiles.
const netnsFD = stepinit.NetnsFD

// pastaDNS is the address that pasta answers DNS on inside the namespace,
// forwarding to the host's first resolver: that one may listen on the
// host's loopback (systemd-resolved's 127.0.0.53), which the step itself
// cannot reach. Link-local, so it never hides a real resolver.
const pastaDNS = "169.254.1.1"

// slirpDNS is slirp4netns's built-in DNS forwarder.
const slirpDNS = "10.0.2.3"

// userNetHelpers are the user-mode network programs, in order of
// preference: pasta is faster, and both keep the host's loopback out of
// reach.
var userNetHelpers = []string{"pasta", "slirp4netns"}

// networkStartTimeout bounds how long the user-mode network may take to
// come up.
const networkStartTimeout = 30 * time.Second

// Network is the isolated network namespace of one build. It is created
// once, joined by every RUN step of the default network mode, and its
// outbound traffic is carried by a user-mode network stack on the host
// side, pasta (Debian's passt) or else slirp4netns, set up so that nothing
// in the namespace reaches the host's loopback. Close tears it down.
type Network struct {
	// Helper is the user-mode network program: "pasta" or "slirp4netns".
	Helper string

	ns         *os.File // the namespace, handed to each step's sandbox
	resolvConf string   // the steps' /etc/resolv.conf, in dir
	dir        string
	ownDir     bool // dir was made by NewNetwork, and goes with Close
	proc       *exec.Cmd
	exited     chan struct{} // closed when proc has exited
	stderr     limitedBuffer // proc's messages, for errors
	slirpExit  *os.File      // slirp4netns's --exit-fd, write end
	stop       chan struct{} // closed by Close: the helper thread stops the helper
	stopped    chan struct{} // closed when the helper thread has ended
	endStart   func()        // cancels the helper's start

	// ready is closed once the helper is up and resolvConf written, or
	// failed to start (readyErr); until then only ns, dir and resolvConf
	// may be used.
	ready    chan struct{}
	readyErr error

	closeOnce sync.Once
	closeErr  error
}

// errNoUserNet says what to install, or which flag to use instead.
var errNoUserNet = errors.New("RUN steps get an isolated network through pasta or slirp4netns, and neither is installed: " +
	"install the passt package (apt-get install passt), or slirp4netns; " +
	"or build with --network=none for steps that need no network, " +
	"or --network=host --allow " + EntitlementNetworkHost + " to share the host's network")

// NetworkHelpers lists the user-mode network programs installed, in the
// order RUN's default network tries them, with their paths.
func NetworkHelpers() (names, paths []string) {
	for _, h := range userNetHelpers {
		if p, err := exec.LookPath(h); err == nil {
			names, paths = append(names, h), append(paths, p)
		}
	}
	return names, paths
}

// NewNetwork creates the build's network namespace and starts its
// user-mode network. dir is a scratch directory of the caller's that
// holds the namespace's files until Close ("" makes a temporary one).
// ctx bounds only the start: the network lives until Close.
func NewNetwork(ctx context.Context, dir string) (n *Network, err error) {
	return NewNetworkWarm(ctx, dir, nil, Sandbox{})
}

// NewNetworkWarm is NewNetwork that also starts w's child for the first
// RUN step in the namespace (Prestart with sb) as soon as the namespace
// exists, so that the child's start overlaps the network helper's. The
// child only waits there: its step runs once NewNetworkWarm has returned
// the network up.
func NewNetworkWarm(ctx context.Context, dir string, w *Warm, sb Sandbox) (*Network, error) {
	n, err := StartNetworkWarm(ctx, dir, w, sb)
	if err == nil {
		err = n.wait(ctx)
	}
	if err != nil {
		if n != nil {
			n.Close()
		}
		return nil, err
	}
	return n, nil
}

// StartNetworkWarm is NewNetworkWarm that returns as soon as the
// namespace exists, while the helper starts: a step's sandbox joins the
// namespace and sets up its root meanwhile, and waits for the network to
// be up before it mounts the image (child.serve). An error of the
// helper's start is that step's. The caller closes the network whatever
// happens.
func StartNetworkWarm(ctx context.Context, dir string, w *Warm, sb Sandbox) (n *Network, err error) {
	helpers, paths := NetworkHelpers()
	if len(helpers) == 0 {
		return nil, errNoUserNet
	}
	// Both helpers open it for the namespace's interface, as whoever kiln
	// runs as: a rootless kiln needs it open to users.
	tun, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("RUN steps get an isolated network through %s, which needs /dev/net/tun: %w "+
			"(most systems make it usable by every user, mode 0666; or build with --network=none for steps that need no network)", helpers[0], err)
	}
	tun.Close()
	n = &Network{dir: dir, ready: make(chan struct{})}
	if n.dir == "" {
		if n.dir, err = os.MkdirTemp("", "kiln-net-"); err != nil {
			return nil, fmt.Errorf("setting up the build network: %w", err)
		}
		n.ownDir = true
	}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	_, nsSpan := trace.Start(ctx, "network namespace")
	n.ns, err = newNetNS()
	nsSpan.End()
	if err != nil {
		return n, fmt.Errorf("setting up the build network: %w", err)
	}
	n.resolvConf = filepath.Join(n.dir, "resolv.conf")
	w.Prestart(n, sb)
	// The helper's start is bounded by its own timeout, not by ctx, which
	// may be a step's: the network outlives it.
	startCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), networkStartTimeout)
	n.endStart = cancel
	started := make(chan error, 1)
	n.stop, n.stopped = make(chan struct{}), make(chan struct{})
	go n.helperThread(startCtx, helpers, paths, started)
	go func() {
		defer cancel()
		_, span := trace.Start(ctx, "start the network helper")
		defer span.End()
		n.readyErr = n.finishStart(<-started)
		close(n.ready)
	}()
	return n, nil
}

// finishStart writes the steps' resolv.conf once the helper has started
// (its DNS forwarder's address depends on which one).
func (n *Network) finishStart(startErr error) error {
	if startErr != nil {
		return fmt.Errorf("setting up the build network %w", startErr)
	}
	dns := pastaDNS
	if n.Helper == "slirp4netns" {
		dns = slirpDNS
	}
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("setting up the build network: %w", err)
	}
	if err := os.WriteFile(n.resolvConf, resolvConf(host, dns), 0o644); err != nil {
		return fmt.Errorf("setting up the build network: %w", err)
	}
	return nil
}

// wait waits until the network is up, or failed to come up.
func (n *Network) wait(ctx context.Context) error {
	select {
	case <-n.ready:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return n.alive()
}

// helperThread starts the first helper that works and reports on
// started, then keeps its thread until Close: the helper's parent-death
// signal fires when the thread that started it ends, and the thread holds
// the mount namespace the helper was started in.
//
// The helpers open the namespace by path. /proc/<pid>/ns/net would not
// do: pasta drops capabilities first and may then no longer look into
// kiln's /proc entry. So the namespace is bound to a file, in a mount
// namespace of this thread's own that the helper inherits: a kiln killed
// outright leaves no mount behind.
func (n *Network) helperThread(ctx context.Context, helpers, paths []string, started chan<- error) {
	// Never unlocked: the thread, and its mount namespace, end with this
	// goroutine.
	runtime.LockOSThread()
	defer close(n.stopped)
	nsFile := filepath.Join(n.dir, "netns")
	err := func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("creating a mount namespace: %w", err)
		}
		// With shared propagation the bind would appear on the host too.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("making / private: %w", err)
		}
		if err := os.WriteFile(nsFile, nil, 0o600); err != nil {
			return err
		}
		if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(int(n.ns.Fd())), nsFile, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding the namespace at %s: %w", nsFile, err)
		}
		// A helper that fails (a security profile that confines pasta,
		// say) leaves the next one to try.
		var errs []error
		for i, h := range helpers {
			n.Helper, n.exited, n.stderr = h, make(chan struct{}), limitedBuffer{}
			var err error
			if h == "pasta" {
				err = n.startPasta(ctx, paths[i], nsFile)
			} else {
				err = n.startSlirp(ctx, paths[i], nsFile)
			}
			if err == nil {
				return nil
			}
			n.stopHelper()
			errs = append(errs, fmt.Errorf("with %s: %w", h, err))
			if ctx.Err() != nil {
				break
			}
		}
		return errors.Join(errs...)
	}()
	// The helper has the namespace open: the file is no longer needed.
	unix.Unmount(nsFile, unix.MNT_DETACH)
	os.Remove(nsFile)
	started <- err
	if err != nil {
		return
	}
	<-n.stop
	n.stopHelper()
}

// newNetNS creates a network namespace with lo up and returns it open.
func newNetNS() (*os.File, error) {
	type result struct {
		ns  *os.File
		err error
	}
	ch := make(chan result, 1)
	// Namespaces belong to threads: this one is locked to its goroutine
	// while it is elsewhere.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("creating a network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("creating a network namespace: %w", err)}
			return
		}
		ns, err := os.Open("/proc/thread-self/ns/net")
		if err == nil {
			if err = stepinit.LoopbackUp(); err != nil {
				ns.Close()
				ns = nil
			}
		}
		// A thread that cannot go back ends with this goroutine (it stays
		// locked), rather than run other goroutines in the namespace; a
		// thread that ends also fires the parent-death signal of the
		// children it started, so going back is the normal way.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{ns, err}
	}()
	r := <-ch
	return r.ns, r.err
}

// pastaArgs is pasta's command line for the namespace bound at nsPath.
func pastaArgs(nsPath, pidFile string) []string {
	return []string{
		"--foreground", "--quiet",
		"--netns", nsPath,
		// The file goes as soon as pasta has the namespace open.
		"--no-netns-quit",
		// Addresses and routes copied from the host's outbound interface.
		"--config-net",
		// No port forwarding either way: -T and -U default to "auto",
		// which mirrors every port listening on the host's loopback
		// into the namespace's.
		"-t", "none", "-u", "none", "-T", "none", "-U", "none",
		// The gateway address stays the real gateway instead of mapping
		// to the host's loopback.
		"--no-map-gw",
		"--dns-forward", pastaDNS,
		"--pid", pidFile,
		// As root pasta would switch to nobody before opening the
		// namespace, and then could not; it still drops every
		// capability it does not need and sandboxes itself.
		"--runas", "0:0",
	}
}

// slirpArgs is slirp4netns's command line for the namespace bound at
// nsPath.
func slirpArgs(nsPath string, readyFD, exitFD int) []string {
	return []string{
		"--configure", "--mtu=65520",
		// 10.0.2.2 would otherwise lead to the host's loopback.
		"--disable-host-loopback",
		"--ready-fd=" + strconv.Itoa(readyFD),
		// Ends with kiln even if kiln is killed.
		"--exit-fd=" + strconv.Itoa(exitFD),
		"--netns-type=path", nsPath, "tap0",
	}
}

// start starts the helper and watches for its exit.
func (n *Network) start(cmd *exec.Cmd) error {
	cmd.Stderr = &n.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The network must not outlive kiln.
		Pdeathsig: syscall.SIGKILL,
		// Nor get a terminal's ^C before kiln has stopped its steps.
		Setpgid: true,
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	n.proc = cmd
	go func() {
		cmd.Wait()
		close(n.exited)
	}()
	return nil
}

// exitError describes the helper's exit.
func (n *Network) exitError() error {
	msg := strings.TrimSpace(n.stderr.String())
	if msg == "" {
		msg = n.proc.ProcessState.String()
	}
	return fmt.Errorf("%s exited: %s", n.Helper, msg)
}

func (n *Network) startPasta(ctx context.Context, path, nsFile string) error {
	pidFile := filepath.Join(n.dir, "pasta.pid")
	if err := n.start(exec.Command(path, pastaArgs(nsFile, pidFile)...)); err != nil {
		return err
	}
	// Its start (tens of milliseconds of CPU) is what the first step
	// waits for, beside the base image's download: ahead of the rest for
	// as long as it takes, where kiln may (root).
	pid := n.proc.Process.Pid
	if unix.Setpriority(unix.PRIO_PROCESS, pid, -10) == nil {
		defer unix.Setpriority(unix.PRIO_PROCESS, pid, 0)
	}
	// pasta writes its pid file once the namespace is configured.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if fi, err := os.Stat(pidFile); err == nil && fi.Size() > 0 {
			return nil
		}
		select {
		case <-n.exited:
			return n.exitError()
		case <-ctx.Done():
			return fmt.Errorf("waiting for pasta: %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

func (n *Network) startSlirp(ctx context.Context, path, nsFile string) error {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return err
	}
	cmd := exec.Command(path, slirpArgs(nsFile, 3, 4)...)
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	err = n.start(cmd)
	readyW.Close()
	exitR.Close()
	if err != nil {
		exitW.Close()
		return err
	}
	// Kept open (close-on-exec) until the network is closed, or kiln
	// ends: slirp4netns exits when it reads EOF.
	n.slirpExit = exitW
	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := readyR.Read(b[:])
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			<-n.exited
			return n.exitError()
		}
		return nil
	case <-n.exited:
		return n.exitError()
	case <-ctx.Done():
		return fmt.Errorf("waiting for slirp4netns: %w", context.Cause(ctx))
	}
}

// alive reports the helper's exit, if it has exited, or its failure to
// start: steps would have no network. A network still starting is alive.
func (n *Network) alive() error {
	select {
	case <-n.ready:
	default:
		return nil
	}
	if n.readyErr != nil {
		return n.readyErr
	}
	select {
	case <-n.exited:
		return fmt.Errorf("the build network is down: %w", n.exitError())
	default:
		return nil
	}
}

// Close stops the user-mode network and releases the namespace; it dies
// with the last process in it.
func (n *Network) Close() error { return n.close(true) }

// Release is Close without waiting for the helper to exit: it is killed
// and reaped in the background. Its exit takes tens of milliseconds, which
// the end of a build need not wait for: were kiln to exit first, the
// helper's parent-death signal ends it all the same.
func (n *Network) Release() error { return n.close(false) }

func (n *Network) close(wait bool) error {
	n.closeOnce.Do(func() {
		if n.endStart != nil {
			n.endStart()
		}
		if n.stop != nil {
			close(n.stop)
			if wait {
				<-n.stopped
			}
		}
		if n.ns != nil {
			n.ns.Close()
		}
		var err error
		if n.ownDir {
			err = os.RemoveAll(n.dir)
		} else if n.resolvConf != "" {
			// Not written if the helper never came up.
			if err = os.Remove(n.resolvConf); errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
			os.Remove(filepath.Join(n.dir, "pasta.pid"))
		}
		if err != nil {
			n.closeErr = fmt.Errorf("removing the build network's files: %w", err)
		}
	})
	return n.closeErr
}

// stopHelper stops the user-mode network program, if one runs.
func (n *Network) stopHelper() {
	if n.proc != nil {
		// Nothing to flush: a network of finished steps.
		n.proc.Process.Kill()
		<-n.exited
		n.proc = nil
	}
	if n.slirpExit != nil {
		n.slirpExit.Close()
		n.slirpExit = nil
	}
}

// resolvConf is a step's /etc/resolv.conf for a user-mode network whose
// DNS forwarder is dns: the forwarder first, then the host's own
// nameservers that the namespace can reach (loopback ones are the
// forwarder's job), with the host's search domains and options.
func resolvConf(host []byte, dns string) []byte {
	var b bytes.Buffer
	servers := []string{dns}
	var rest []string
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			addr, err := netip.ParseAddr(fields[1])
			// glibc reads three nameservers at most.
			if err == nil && !addr.IsLoopback() && len(servers) < 3 && fields[1] != dns {
				servers = append(servers, fields[1])
			}
		case "search", "domain", "options":
			rest = append(rest, line)
		}
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	for _, l := range rest {
		b.WriteString(l + "\n")
	}
	return b.Bytes()
}

// prepareNetwork sets up cs for spec's network mode and returns the
// namespace flags of the sandbox, and what to release after the step.
func prepareNetwork(ctx context.Context, spec RunSpec, cs *childSpec) (cloneflags uintptr, release func(), err error) {
	release = func() {}
	if err := CheckNetwork(spec.Network, spec.Sandbox); err != nil {
		return 0, release, err
	}
	switch spec.Network {
	case NetworkHost:
		return 0, release, nil
	case NetworkNone:
		cs.NetNone = true
		return syscall.CLONE_NEWNET, release, nil
	}
	n := spec.Net
	if n == nil {
		// A step on its own (kiln debug): a network of its own.
		if n, err = NewNetwork(ctx, ""); err != nil {
			return 0, release, err
		}
		release = func() { n.Close() }
	} else if err := n.alive(); err != nil {
		return 0, release, err
	}
	cs.JoinNet, cs.netns, cs.net, cs.ResolvConf = true, n.ns, n, n.resolvConf
	return 0, release, nil
}
