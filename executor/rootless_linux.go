package executor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/stepinit"
	"github.com/kiln-build/kiln/internal/userns"
)

// usernsEnv marks the stages of a rootless kiln: "map" while the first
// child waits for its ID maps, "1" once it runs as root of its user
// namespace. An environment variable rather than an argument: the command
// line must reach the namespaced kiln exactly as the user typed it.
const usernsEnv = "_KILN_USERNS"

// usernsParentEnv holds the pid of the kiln that waits for the namespaced
// one.
const usernsParentEnv = "_KILN_USERNS_PARENT"

// usernsSyncFD is where the first child reads that its maps are written.
const usernsSyncFD = 3

// rootlessErr is why EnterUserNS could not set up the user namespace.
var rootlessErr error

// EnterUserNS makes a normal user's kiln run as root of a user namespace,
// as buildah and rootlesskit do: everything else in kiln (store writes,
// chown, unpacking layers, overlay mounts) then works unchanged. It
// re-executes kiln in a new user and mount namespace whose root is the
// user, with the user's /etc/subuid and /etc/subgid ranges mapped by
// newuidmap and newgidmap, waits for it and returns its exit status with
// done set. main calls it right after Init.
//
// It returns done false when this process is the one to carry on: kiln
// runs as root, or already in its namespace, or the namespace could not be
// set up; RootlessError then says why, for the commands that need it.
func EnterUserNS() (code int, done bool) {
	switch os.Getenv(usernsEnv) {
	case "map":
		// The ID maps are written by our parent; until then we are nobody
		// without capabilities, and exec is what gives root of the
		// namespace its capabilities.
		if err := execMapped(); err != nil {
			fmt.Fprintf(os.Stderr, "kiln: entering the user namespace: %v\n", err)
		}
		return 1, true
	case "1":
		// The exec that made us root of the namespace cleared the
		// parent-death signal (the kernel does when capabilities are
		// gained): set it again, so that killing the kiln the user
		// started still takes the build along, and make sure that kiln
		// did not die before.
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "kiln: setting the parent-death signal: %v\n", err)
			return 1, true
		}
		if strconv.Itoa(os.Getppid()) != os.Getenv(usernsParentEnv) {
			return 1, true
		}
		return 0, false
	}
	if os.Geteuid() == 0 {
		return 0, false
	}
	code, err := runInUserNS()
	if err != nil {
		rootlessErr = err
		return 0, false
	}
	return code, true
}

// Rootless reports whether kiln runs as a normal user, as root of the
// user namespace EnterUserNS set up.
func Rootless() bool {
	return os.Getenv(usernsEnv) == "1" && userns.Running()
}

// RootlessError says why kiln, run as a normal user, could not enter a
// user namespace of its own; nil when it runs as root or did.
func RootlessError() error { return rootlessErr }

// execMapped waits for the parent to write our ID maps and re-executes
// kiln as root of the namespace.
func execMapped() error {
	sync := os.NewFile(usernsSyncFD, "userns-sync")
	var b [1]byte
	n, _ := sync.Read(b[:])
	sync.Close()
	if n != 1 {
		// The parent failed to map us and says why itself.
		os.Exit(1)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("still uid %d after the ID maps were written", os.Geteuid())
	}
	env := os.Environ()
	for i, kv := range env {
		if strings.HasPrefix(kv, usernsEnv+"=") {
			env[i] = usernsEnv + "=1"
		}
	}
	return unix.Exec("/proc/self/exe", os.Args, env)
}

// runInUserNS runs kiln again in a new user and mount namespace and
// returns its exit status.
func runInUserNS() (int, error) {
	uid, gid := os.Getuid(), os.Getgid()
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	noRange := fmt.Errorf("rootless builds need a range in /etc/subuid and /etc/subgid for %[1]s (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %[1]s)", name)
	subuids, err := subIDRanges("/etc/subuid", name, uid)
	if err != nil {
		return 0, err
	}
	subgids, err := subIDRanges("/etc/subgid", name, uid)
	if err != nil {
		return 0, err
	}
	if len(subuids) == 0 || len(subgids) == 0 {
		return 0, noRange
	}
	newuidmap, err := exec.LookPath("newuidmap")
	if err != nil {
		return 0, errors.New("rootless builds need newuidmap and newgidmap to map the /etc/subuid and /etc/subgid ranges: install the uidmap package (apt-get install uidmap)")
	}
	newgidmap, err := exec.LookPath("newgidmap")
	if err != nil {
		return 0, errors.New("rootless builds need newuidmap and newgidmap to map the /etc/subuid and /etc/subgid ranges: install the uidmap package (apt-get install uidmap)")
	}
	if v, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(v)) == "0" {
		return 0, errors.New("rootless builds need user namespaces, which the kernel allows only to root here (sysctl kernel.unprivileged_userns_clone=1 allows them)")
	}

	syncR, syncW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("creating user namespace sync pipe: %w", err)
	}
	defer syncW.Close()
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(withoutEnv(withoutEnv(os.Environ(), usernsEnv), usernsParentEnv),
		usernsEnv+"=map", usernsParentEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{syncR} // usernsSyncFD
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		// Our namespaced self must not outlive us, nor we it: signals
		// are forwarded below.
		Pdeathsig: syscall.SIGKILL,
	}
	// Before Start: a ^C in between must reach the child, not end us.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, stepinit.Forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		syncR.Close()
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EACCES) {
			return 0, fmt.Errorf("creating a user namespace for a rootless build: %w (the kernel forbids it: check sysctl user.max_user_namespaces and kernel.unprivileged_userns_clone, or AppArmor's kernel.apparmor_restrict_unprivileged_userns)", err)
		}
		return 0, fmt.Errorf("creating a user namespace for a rootless build: %w", err)
	}
	syncR.Close()
	pid := strconv.Itoa(cmd.Process.Pid)
	mapErr := writeIDMap(newuidmap, pid, uid, subuids)
	if mapErr == nil {
		mapErr = writeIDMap(newgidmap, pid, gid, subgids)
	}
	if mapErr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		if strings.Contains(mapErr.Error(), "not allowed") {
			return 0, fmt.Errorf("%w: %w", noRange, mapErr)
		}
		return 0, mapErr
	}
	if _, err := syncW.Write([]byte{1}); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("starting kiln in its user namespace: %w", err)
	}
	syncW.Close()
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		return 128 + int(ws.Signal()), nil
	case ok:
		return ws.ExitStatus(), nil
	}
	return 1, fmt.Errorf("running kiln in its user namespace: %w", err)
}

// idRange is one line of /etc/subuid or /etc/subgid.
type idRange struct{ start, count uint64 }

// subIDRanges reads the ranges that file grants the user, by name or by
// uid as shadow's tools accept both.
func subIDRanges(file, name string, uid int) ([]idRange, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	defer f.Close()
	var ranges []idRange
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 || (parts[0] != name && parts[0] != strconv.Itoa(uid)) {
			continue
		}
		start, err1 := strconv.ParseUint(parts[1], 10, 32)
		count, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 {
			continue
		}
		ranges = append(ranges, idRange{start, count})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return ranges, nil
}

// writeIDMap maps root of the namespace to id, ours, and 1, 2, ... to the
// ranges in order, with the setuid helper tool (newuidmap or newgidmap):
// only it may map IDs that are not ours.
func writeIDMap(tool, pid string, id int, ranges []idRange) error {
	args := []string{pid, "0", strconv.Itoa(id), "1"}
	next := uint64(1)
	for _, r := range ranges {
		args = append(args, strconv.FormatUint(next, 10), strconv.FormatUint(r.start, 10), strconv.FormatUint(r.count, 10))
		next += r.count
	}
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mapping IDs with %s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func withoutEnv(env []string, key string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}
