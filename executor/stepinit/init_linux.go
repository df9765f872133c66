package stepinit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/caps"
	"github.com/kiln-build/kiln/executor/seccomp"
	"github.com/kiln-build/kiln/internal/userdb"
	"github.com/kiln-build/kiln/rooted"
)

// defaultPath is only used to find the command when the step's Env has no
// PATH; the command's environment stays exactly the step's.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Forwarded are the signals PID 1 passes on to the command. The command
// runs in its own session, so a terminal's ^C reaches it only this way.
var Forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

var (
	forwardOnce sync.Once
	forwarded   chan os.Signal
)

// forwardedSignals starts catching the Forwarded signals, once, and
// returns where they arrive. The first signal.Notify of a process starts
// Go's signal loop, about half a millisecond: a child started ahead of
// its step does it while it waits for the spec (warmUp). A signal caught
// before the command starts is passed on once it has.
func forwardedSignals() chan os.Signal {
	forwardOnce.Do(func() {
		forwarded = make(chan os.Signal, 8)
		signal.Notify(forwarded, Forwarded...)
	})
	return forwarded
}

// hardenCommand applies, on the calling thread that the command is then
// forked from, what the command inherits: a cgroup namespace, the
// capability bounding set and the seccomp filter. Seccomp is last: from
// there on this thread can no longer mount or unshare.
func hardenCommand(cs *Spec) error {
	// A cgroup namespace rooted at the step's cgroup: the command sees its
	// cgroup as "/", not the host's layout. Only this thread, and so the
	// command forked from it, enters it.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("creating a cgroup namespace: %w", err)
	}
	unix.Umask(0o022)
	if cs.Insecure {
		return nil
	}
	keep := caps.Default
	if cs.Guards.NoDevices {
		// No device allow-list: the root is nodev, and no new node may
		// be made where it is not.
		keep = caps.Without(keep, unix.CAP_MKNOD)
	}
	if err := caps.LimitBounding(keep); err != nil {
		return err
	}
	if cs.Guards.NoSeccomp {
		return nil // allowed by the build; see newStepCgroup
	}
	return seccomp.Load()
}

// runInit is the life of PID 1 in the sandbox: start the command, reap
// every process that gets orphaned to us (daemons started by the step,
// double forks), and exit when the command exits. Whatever the command
// left running is killed first, as the kernel would on our exit (as when
// a container's main process exits), and reaped, and our output closed:
// when the parent hears that the step is over, nothing in the sandbox
// writes to the step's layer or its log any more, and it commits the
// layer while the kernel tears our namespaces down.
func runInit(rep Reporter, cs *Spec, id identity) int {
	path, err := lookPath(cs.Args[0], cs.Env)
	if err != nil {
		return reportExit(rep, 127, "", err.Error())
	}
	env := append([]string{}, cs.Env...) // never nil: nil means our own environment
	if !hasEnv(env, "HOME") {
		// As runc does, and so BuildKit: images and scripts count on it.
		env = append(env, "HOME="+id.Home)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   cs.Args,
		Env:    env,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Setsid: true,
			Credential: &syscall.Credential{
				Uid:    id.UID,
				Gid:    id.GID,
				Groups: id.Groups,
			},
		},
	}
	if cs.Interactive {
		cmd.Stdin = os.Stdin
	}
	// Caught from before Start, so that a signal arriving in between is
	// not lost.
	sigs := forwardedSignals()
	// Right before the fork and exec, whatever the init opened since it
	// started (or a library opened without O_CLOEXEC) must not reach the
	// command: a directory fd would lead out of the root (runc's
	// CVE-2024-21626). Start passes exactly 0, 1 and 2.
	if err := CloseExtraFDs(); err != nil {
		return rep.Fail(err)
	}
	if err := cmd.Start(); err != nil {
		code := 126 // found but not executable, as a shell reports it
		if errors.Is(err, fs.ErrNotExist) {
			code = 127 // e.g. a script's interpreter is missing
		}
		return reportExit(rep, code, "", err.Error())
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()

	pid := cmd.Process.Pid
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return rep.Fail(fmt.Errorf("waiting for the command: %w", err))
		}
		if wpid != pid {
			continue // an orphan, now reaped
		}
		switch {
		case ws.Exited():
			if err := endSandbox(); err != nil {
				return rep.Fail(err)
			}
			return reportExit(rep, ws.ExitStatus(), "", "")
		case ws.Signaled():
			name := strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
			if name == "" {
				name = fmt.Sprint(int(ws.Signal()))
			}
			if err := endSandbox(); err != nil {
				return rep.Fail(err)
			}
			return reportExit(rep, 128+int(ws.Signal()), name, "")
		}
	}
}

// endSandbox kills every other process of the sandbox's PID namespace
// and reaps them all (they are all ours once their parents die), then
// closes our standard output and error: the step's log ends when the
// last copy of them closes.
func endSandbox() error {
	// As PID 1 of the namespace: kill(-1) reaches every process in it
	// but us, and nothing outside it.
	if err := unix.Kill(-1, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("ending the step's processes: %w", err)
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) {
			break
		}
		if err != nil {
			return fmt.Errorf("reaping the step's processes: %w", err)
		}
	}
	os.Stdout.Close()
	os.Stderr.Close()
	return nil
}

// CloseExtraFDs marks every descriptor from 3 up close-on-exec. The
// sandbox init calls it right before it starts the command; kiln calls it
// before it starts a sandbox child, for descriptors it inherited without
// close-on-exec (from a CI runner, say): Go opens its own with it, and
// exec.Cmd hands a child its ExtraFiles whatever their flag. close_range
// needs Linux 5.11; older kernels get the same from a walk of
// /proc/self/fd.
func CloseExtraFDs() error {
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing open descriptors: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("listing open descriptors: %w", err)
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < 3 || fd == int(d.Fd()) {
			continue
		}
		unix.CloseOnExec(fd)
	}
	return nil
}

func reportExit(rep Reporter, code int, signal, reason string) int {
	rep.Send(Msg{Done: true, Exit: &code, Signal: signal, Reason: reason})
	return code
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// lookPath finds argv[0] with the step's PATH, in the new root.
func lookPath(name string, env []string) (string, error) {
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	if err := os.Setenv("PATH", path); err != nil {
		return "", err
	}
	p, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrDot) {
		// A "." in the image's PATH is the image's choice; Go's safety net
		// against the current directory is for Go programs, not for us.
		err = nil
	}
	return p, err
}

// lookupUser resolves USER against the new root's /etc/passwd and
// /etc/group, read through userdb: a FIFO or device planted there by the
// image is refused instead of hanging the step.
func lookupUser(spec string) (identity, error) {
	root, err := rooted.Open("/")
	if err != nil {
		return identity{}, err
	}
	defer root.Close()
	var files [2]io.Reader
	for i, name := range []string{"/etc/passwd", "/etc/group"} {
		data, err := userdb.ReadFile(root, name)
		if err != nil {
			return identity{}, err
		}
		if data != nil {
			files[i] = bytes.NewReader(data)
		}
	}
	return resolveUser(spec, files[0], files[1])
}
