package executor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/userdb"
	"github.com/kiln-build/kiln/rooted"
)

// defaultPath is only used to find the command when the step's Env has no
// PATH; the command's environment stays exactly the step's.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// forwarded are the signals PID 1 passes on to the command. The command
// runs in its own session, so a terminal's ^C reaches it only this way.
var forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// runInit is the life of PID 1 in the sandbox: start the command, reap
// every process that gets orphaned to us (daemons started by the step,
// double forks), and exit when the command exits. Our exit ends the PID
// namespace: the kernel kills whatever the command left running, as when
// a container's main process exits.
func runInit(rep reporter, cs *childSpec, id identity) int {
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
	// Before Start, so that a signal arriving in between is not lost.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
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
			return rep.fail(fmt.Errorf("waiting for the command: %w", err))
		}
		if wpid != pid {
			continue // an orphan, now reaped
		}
		switch {
		case ws.Exited():
			return reportExit(rep, ws.ExitStatus(), "", "")
		case ws.Signaled():
			name := strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
			if name == "" {
				name = fmt.Sprint(int(ws.Signal()))
			}
			return reportExit(rep, 128+int(ws.Signal()), name, "")
		}
	}
}

func reportExit(rep reporter, code int, signal, reason string) int {
	rep.send(childMsg{Done: true, Exit: &code, Signal: signal, Reason: reason})
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
