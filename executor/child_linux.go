package executor

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/copier"
)

// reporter sends childMsgs to the parent on fd 4.
type reporter struct{ enc *json.Encoder }

func (r reporter) send(m childMsg) {
	// Nothing useful to do if the parent is gone: Pdeathsig ends us.
	_ = r.enc.Encode(m)
}

// fail reports a setup error and returns the child's exit status.
func (r reporter) fail(err error) int {
	r.send(childMsg{Done: true, Error: err.Error()})
	return 1
}

// childMain is the sandbox child: it reads its spec from fd 3, reports on
// fd 4, and returns its exit status.
func childMain() int {
	// The capability bounding set is per thread, and the command is forked
	// from the thread that starts it: all of the child's work stays on
	// this one thread.
	runtime.LockOSThread()
	// Every inherited descriptor but 0, 1 and 2 must stay out of the user
	// command, including the two pipes to the parent (fds 3 and 4 arrive
	// without close-on-exec). close_range needs Linux 5.11; the pipes are
	// marked individually for older kernels.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		unix.CloseOnExec(3)
		unix.CloseOnExec(4)
	}
	rep := reporter{enc: json.NewEncoder(os.NewFile(4, "report"))}
	specFile := os.NewFile(3, "spec")
	dec := json.NewDecoder(specFile)
	var cs childSpec
	if err := dec.Decode(&cs); err != nil {
		specFile.Close()
		return rep.fail(fmt.Errorf("reading sandbox spec: %w", err))
	}
	// A RUN child learns on the same pipe when the parent has placed it in
	// the step's cgroup; see runChild.
	waitPlaced := func() error {
		defer specFile.Close()
		var p placement
		if err := dec.Decode(&p); err != nil || !p.Placed {
			return fmt.Errorf("waiting to be placed in the step's cgroup: %v", err)
		}
		return nil
	}
	// Modes below are meant literally; the command gets the usual 022.
	unix.Umask(0)
	// Our mount namespace starts as a copy of the host's; with shared
	// propagation every mount below would appear on the host too.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return rep.fail(fmt.Errorf("making / private: %w", err))
	}
	switch cs.Mode {
	case "run":
		return runChildRun(rep, &cs, waitPlaced)
	case "copy":
		specFile.Close()
		return runChildCopy(rep, &cs)
	}
	return rep.fail(fmt.Errorf("unknown sandbox mode %q", cs.Mode))
}

// In the copy child's root, the destination and the source are mounted
// under names no in-image path is likely to start with: error messages
// are rewritten from them to in-root paths.
const (
	copyRootDst = "/.kiln-copy-dst"
	copyRootSrc = "/.kiln-copy-src"
)

// runChildCopy mounts the destination (and source) and runs the copier in
// a root of its own: a tmpfs holding only the destination (read-write),
// the source (read-only, nosuid, nodev) and this process's own
// /proc/self/fd, which the copier's *at calls without an *at form go
// through. The host's root is detached, so a path the copier got wrong
// cannot reach it: rooted is the first guard, this is the second.
func runChildCopy(rep reporter, cs *childSpec) int {
	if err := mountStepTmpfs(cs.StepDir, "empty", "dst", "src", "root"); err != nil {
		return rep.fail(err)
	}
	empty := filepath.Join(cs.StepDir, "empty")
	dst := filepath.Join(cs.StepDir, "dst")
	used, err := mountOverlay(dst, overlay{
		lowers: cs.Rootfs.Lowers, empty: empty,
		upper: cs.Rootfs.Upper, work: cs.Rootfs.Work, volatile: cs.Volatile,
	})
	if err != nil {
		return rep.fail(err)
	}
	if cs.Volatile && !used {
		rep.send(childMsg{NoVolatile: true})
	}
	src := cs.SourceDir
	if len(cs.Source.Lowers) > 0 {
		src = filepath.Join(cs.StepDir, "src")
		if _, err := mountOverlay(src, overlay{lowers: cs.Source.Lowers, empty: empty}); err != nil {
			return rep.fail(err)
		}
	}
	newRoot := filepath.Join(cs.StepDir, "root")
	if err := copyRoot(newRoot, dst, src); err != nil {
		return rep.fail(fmt.Errorf("preparing the copy's root: %w", err))
	}
	if err := pivotRoot(newRoot); err != nil {
		return rep.fail(err)
	}
	inSrc := ""
	if src != "" {
		inSrc = copyRootSrc
	}
	// Files are copied on every core: this process was cloned into its
	// mount namespace and pivoted root whole, so every thread is in it.
	if err := copier.DoWith(inSrc, copyRootDst, cs.Op, copier.Options{Workers: runtime.GOMAXPROCS(0)}); err != nil {
		m := childMsg{Done: true, Error: err.Error()}
		notFoundInfo(err, &m)
		rep.send(m)
		return 0
	}
	rep.send(childMsg{Done: true})
	return 0
}

// copyRoot builds the copy child's root at dir: a small tmpfs with the
// destination bound read-write, the source (when there is one) read-only,
// and this process's fd directory at /proc/self/fd — only ours, so no
// other process's root or files are reachable through it.
func copyRoot(dir, dst, src string) error {
	if err := mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755,size=1m"); err != nil {
		return err
	}
	for _, d := range []string{copyRootDst, copyRootSrc, "/proc/self/fd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(dst, filepath.Join(dir, copyRootDst), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding the destination: %w", err)
	}
	if src != "" {
		if err := bindSourceReadOnly(src, filepath.Join(dir, copyRootSrc)); err != nil {
			return err
		}
	}
	// /proc/self resolves when mounted: this binds our own fd directory.
	if err := bindReadOnly("/proc/self/fd", filepath.Join(dir, "/proc/self/fd"), unix.MS_NOEXEC); err != nil {
		return err
	}
	// The root itself read-only: nothing but the destination is written.
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755,size=1m"); err != nil {
		return fmt.Errorf("making the copy's root read-only: %w", err)
	}
	return nil
}

// bindSourceReadOnly binds a source tree, with the mounts below it (a
// build context may hold some), read-only, nosuid and nodev throughout.
func bindSourceReadOnly(src, target string) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding the source %s: %w", src, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	err := unix.MountSetattr(-1, target, unix.AT_RECURSIVE, attr)
	if err == nil {
		return nil
	}
	if err != unix.ENOSYS {
		return fmt.Errorf("making the source read-only: %w", err)
	}
	// Before Linux 5.12: the top mount at least.
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("making the source read-only: %w", err)
	}
	return nil
}
