package executor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stepRootfs is newRootfs for goroutines: errors are returned, not fatal.
func stepRootfs(dir string, lowers ...string) (Rootfs, error) {
	d, err := os.MkdirTemp(dir, "step-")
	if err != nil {
		return Rootfs{}, err
	}
	r := Rootfs{Lowers: lowers, Upper: filepath.Join(d, "upper"), Work: filepath.Join(d, "work")}
	if err := os.Mkdir(r.Upper, 0o755); err != nil {
		return r, err
	}
	return r, os.Mkdir(r.Work, 0o755)
}

// procFDs lists the descriptors of pid with what they point at.
func procFDs(pid string) (map[int]string, error) {
	dir := filepath.Join("/proc", pid, "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fds := map[int]string{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		fds[n] = target
	}
	return fds, nil
}

// stepProcesses finds the sandbox init and the command of a step whose
// stdin is the pipe stdin: both hold it as fd 0.
func stepProcesses(stdin string) (init, cmd string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if t, err := os.Readlink(filepath.Join("/proc", e.Name(), "fd/0")); err != nil || t != stdin {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(sandboxArg)) {
			init = e.Name()
		} else if bytes.HasPrefix(cmdline, []byte("cat\x00")) {
			cmd = e.Name()
		}
	}
	return init, cmd
}

// checkStepFDs runs a step whose command waits on its stdin and looks at
// the descriptors of the command and of the sandbox init from the host,
// while they run: the command has exactly 0, 1 and 2; the init has no
// file or directory open beyond those (pipes to kiln, its Go runtime's
// epoll and eventfd, a pidfd), and in particular not canary, a file the
// test process holds without close-on-exec.
func checkStepFDs(dir, base, canary string) error {
	rootfs, err := stepRootfs(dir, base)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer w.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(r.Fd()), &st); err != nil {
		return err
	}
	stdin := fmt.Sprintf("pipe:[%d]", st.Ino)
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		done <- Run(context.Background(), RunSpec{Rootfs: rootfs, Env: []string{testPath}, Args: []string{"cat"}, Stdin: r, Stdout: &out})
		r.Close()
	}()
	var initPid, cmdPid string
	for deadline := time.Now().Add(20 * time.Second); cmdPid == "" && time.Now().Before(deadline); {
		initPid, cmdPid = stepProcesses(stdin)
		if cmdPid == "" {
			time.Sleep(5 * time.Millisecond)
		}
	}
	var problems []string
	if cmdPid == "" {
		problems = append(problems, "the command never showed up")
	} else {
		fds, err := procFDs(cmdPid)
		if err != nil {
			problems = append(problems, err.Error())
		}
		for fd, target := range fds {
			if fd > 2 {
				problems = append(problems, fmt.Sprintf("the command holds fd %d → %s", fd, target))
			}
		}
		if len(fds) != 3 && err == nil {
			problems = append(problems, fmt.Sprintf("the command holds %v, want 0, 1 and 2", fds))
		}
	}
	if initPid != "" {
		fds, _ := procFDs(initPid)
		for fd, target := range fds {
			if fd <= 2 {
				continue
			}
			if target == canary || !(strings.HasPrefix(target, "pipe:") || strings.HasPrefix(target, "anon_inode:")) {
				problems = append(problems, fmt.Sprintf("the init holds fd %d → %s", fd, target))
			}
		}
	}
	w.Close()
	if err := <-done; err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// TestRunOnlyStdioUnderLoad checks, 50 times over in parallel and beside
// other sandbox steps, that the command gets exactly fds 0, 1 and 2 and
// that no descriptor of kiln (one it holds without close-on-exec included)
// reaches the init or the command: a descriptor that leaks only under some
// timing is how runc's CVE-2024-21626 escaped.
func TestRunOnlyStdioUnderLoad(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	must(t, os.WriteFile(canary, nil, 0o644))
	// Held as an inherited descriptor would be: without O_CLOEXEC.
	fd, err := unix.Open(canary, unix.O_RDONLY, 0)
	must(t, err)
	defer unix.Close(fd)

	const (
		workers    = 5
		iterations = 10 // per worker, for each kind of check
	)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	fail := func(format string, a ...any) {
		mu.Lock()
		errs = append(errs, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	run := func(args []string) (string, error) {
		rootfs, err := stepRootfs(dir, base)
		if err != nil {
			return "", err
		}
		var out bytes.Buffer
		err = Run(context.Background(), RunSpec{Rootfs: rootfs, Env: []string{testPath}, Args: args, Stdout: &out})
		return out.String(), err
	}
	for w := 0; w < workers; w++ {
		wg.Add(3)
		// Seen from the host while the step runs.
		go func() {
			defer wg.Done()
			for i := 0; i < iterations; i++ {
				if err := checkStepFDs(dir, base, canary); err != nil {
					fail("host view: %v", err)
				}
			}
		}()
		// Seen by the command itself, no shell in between: ls lists its
		// own descriptors, 3 being the directory it reads.
		go func() {
			defer wg.Done()
			for i := 0; i < iterations; i++ {
				out, err := run([]string{"ls", "/proc/self/fd"})
				if err != nil || out != "0\n1\n2\n3\n" {
					fail("ls /proc/self/fd: %q, %v", out, err)
				}
			}
		}()
		// Other steps beside them: a shell pipeline (whose own pipe the
		// shell holds for a while, which is not the command's to keep),
		// forks, file writes.
		go func() {
			defer wg.Done()
			for i := 0; i < iterations; i++ {
				out, err := run([]string{"/bin/sh", "-c", "for i in 1 2 3; do ls / | wc -l > /tmp/n; done; cat /tmp/n"})
				if err != nil || out == "" {
					fail("busy step: %q, %v", out, err)
				}
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		t.Error(e)
	}
}
