package executor

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/executor/stepinit"
)

// copyChildMain is the copy sandbox child (COPY, ADD, WORKDIR): it reads
// its spec from fd 3, reports on fd 4, and returns its exit status. It
// runs in a re-executed kiln rather than kiln-init, which would otherwise
// have to link the copier and what it needs.
func copyChildMain() int {
	rep, dec, specFile := stepinit.Begin()
	var cs childSpec
	err := dec.Decode(&cs)
	specFile.Close()
	if err != nil {
		return rep.Fail(fmt.Errorf("reading sandbox spec: %w", err))
	}
	if cs.Mode != "copy" {
		return rep.Fail(fmt.Errorf("the copy child runs copies only, not mode %q", cs.Mode))
	}
	if err := stepinit.Prepare(); err != nil {
		return rep.Fail(err)
	}
	return runChildCopy(rep, &cs)
}

// In the copy child's root, the destination and the source are mounted
// under names no in-image path is likely to start with: error messages
// are rewritten from them to in-root paths.
const (
	copyRootDst = "/.kiln-copy-dst"
	copyRootSrc = "/.kiln-copy-src"
	// copyRootUpper is the destination overlay's upper directory, which
	// the copier writes the directories it made into directly.
	copyRootUpper = "/.kiln-copy-upper"
)

// runChildCopy mounts the destination (and source) and runs the copier in
// a root of its own: a tmpfs holding only the destination (read-write),
// the source (read-only, nosuid, nodev) and this process's own
// /proc/self/fd, which the copier's *at calls without an *at form go
// through. The host's root is detached, so a path the copier got wrong
// cannot reach it: rooted is the first guard, this is the second.
func runChildCopy(rep stepinit.Reporter, cs *childSpec) int {
	if err := stepinit.MountStepTmpfs(cs.StepDir, "empty", "dst", "src", "root"); err != nil {
		return rep.Fail(err)
	}
	empty := filepath.Join(cs.StepDir, "empty")
	dst := filepath.Join(cs.StepDir, "dst")
	used, err := stepinit.MountOverlay(dst, stepinit.Overlay{
		Lowers: cs.Rootfs.Lowers, Empty: empty,
		Upper: cs.Rootfs.Upper, Work: cs.Rootfs.Work, Volatile: cs.Volatile,
	})
	if err != nil {
		return rep.Fail(err)
	}
	if cs.Volatile && !used {
		rep.Send(childMsg{NoVolatile: true})
	}
	src := cs.SourceDir
	if len(cs.Source.Lowers) > 0 {
		src = filepath.Join(cs.StepDir, "src")
		if _, err := stepinit.MountOverlay(src, stepinit.Overlay{Lowers: cs.Source.Lowers, Empty: empty}); err != nil {
			return rep.Fail(err)
		}
	}
	newRoot := filepath.Join(cs.StepDir, "root")
	if err := copyRoot(newRoot, dst, src, cs.Rootfs.Upper); err != nil {
		return rep.Fail(fmt.Errorf("preparing the copy's root: %w", err))
	}
	if err := stepinit.PivotRoot(newRoot); err != nil {
		return rep.Fail(err)
	}
	inSrc := ""
	if src != "" {
		inSrc = copyRootSrc
	}
	// Files are copied on every core: this process was cloned into its
	// mount namespace and pivoted root whole, so every thread is in it.
	opt := copier.Options{Workers: runtime.GOMAXPROCS(0)}
	if cs.Rootfs.Upper != "" {
		opt.Upper = copyRootUpper
	}
	if err := copier.DoWith(inSrc, copyRootDst, cs.Op, opt); err != nil {
		m := childMsg{Done: true, Error: err.Error()}
		notFoundInfo(err, &m)
		rep.Send(m)
		return 0
	}
	rep.Send(childMsg{Done: true})
	return 0
}

// copyRoot builds the copy child's root at dir: a small tmpfs with the
// destination and its overlay's upper directory (when there is one) bound
// read-write, the source (when there is one) read-only, and this
// process's fd directory at /proc/self/fd — only ours, so no other
// process's root or files are reachable through it.
func copyRoot(dir, dst, src, upper string) error {
	if err := stepinit.MountFS("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755,size=1m"); err != nil {
		return err
	}
	for _, d := range []string{copyRootDst, copyRootSrc, copyRootUpper, "/proc/self/fd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(dst, filepath.Join(dir, copyRootDst), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding the destination: %w", err)
	}
	if upper != "" {
		if err := unix.Mount(upper, filepath.Join(dir, copyRootUpper), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding the destination's upper directory: %w", err)
		}
	}
	if src != "" {
		if err := bindSourceReadOnly(src, filepath.Join(dir, copyRootSrc)); err != nil {
			return err
		}
	}
	// /proc/self resolves when mounted: this binds our own fd directory.
	if err := stepinit.BindReadOnly("/proc/self/fd", filepath.Join(dir, "/proc/self/fd"), unix.MS_NOEXEC); err != nil {
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
