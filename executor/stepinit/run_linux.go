package stepinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/rooted"
)

// rootMount is a mount on a path of the image's own tree (as opposed to
// the ones inside our /dev tmpfs). Its target may have to be created as a
// stub, which must then not end up in the layer.
type rootMount struct {
	target string // inside the rootfs
	dir    bool   // the mount point is a directory (else a file)
	mount  func(dst string) error
}

// runStep sets up the RUN sandbox and runs the command as PID 1's
// child. It returns the exit status for the sandbox child. st is what
// the child staged from its Prelude (stage).
//
// waitMount returns once we may mount the step's root (MountReady);
// waitPlaced returns once the parent has placed us in the step's cgroup;
// the root is set up in the meantime.
func runStep(rep Reporter, cs *Spec, st *staged, waitMount, waitPlaced func() error) int {
	var (
		empty  = st.path("empty")
		probe  = st.path("probe")
		stubs  = st.path("stubs")
		merged = st.path("root")
		hosts  = st.path("hosts")
		resolv = st.path("resolv.conf")
	)
	hostsData := fmt.Sprintf("127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", cs.Hostname) + cs.ExtraHosts
	if err := os.WriteFile(hosts, []byte(hostsData), 0o644); err != nil {
		return rep.Fail(fmt.Errorf("writing hosts file: %w", err))
	}

	// The staged /proc, /dev and /sys are moved into the root, with the
	// mounts on top of them.
	mounts := []rootMount{
		{target: "/proc", dir: true, mount: func(dst string) error { return moveMount(st.proc, dst) }},
		{target: "/dev", dir: true, mount: func(dst string) error { return moveMount(st.dev, dst) }},
		{target: "/sys", dir: true, mount: func(dst string) error { return moveMount(st.sys, dst) }},
		{target: "/etc/hosts", mount: func(dst string) error { return bindFromStep(hosts, dst) }},
	}
	// The build network's resolv.conf, which points at its DNS forwarder,
	// or else the host's. Without one on the host there is nothing to
	// bind, and the image's own (if any) stays visible, as with BuildKit.
	// A copy on our tmpfs rather than a bind of the host's file: it is
	// then read-only with the tmpfs, without a mount call of its own.
	copyResolv := func(src string) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(resolv, data, 0o644); err != nil {
			return fmt.Errorf("writing resolv.conf: %w", err)
		}
		return nil
	}
	bindResolv := rootMount{target: "/etc/resolv.conf", mount: func(dst string) error {
		return bindFromStep(resolv, dst)
	}}
	if cs.ResolvConf != "" {
		// The build network's, written once its helper is up: copied
		// after MountReady, which comes then.
		mounts = append(mounts, bindResolv)
	} else if err := copyResolv("/etc/resolv.conf"); err == nil {
		mounts = append(mounts, bindResolv)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return rep.Fail(fmt.Errorf("reading resolv.conf: %w", err))
	}

	// RUN --mount mounts come after ours, so that a mount below /dev or
	// /etc/hosts lands on top of them; their targets are stubs like ours.
	for _, m := range cs.Mounts {
		rm, err := userMount(m)
		if err != nil {
			return rep.Fail(err)
		}
		mounts = append(mounts, rm)
	}

	// Files outside /dev are bound read-only from our tmpfs; those in /dev
	// are written to the sandbox's /dev after pivot_root.
	var devFiles []File
	for i, f := range cs.Files {
		p := filepath.Clean(f.Path)
		if strings.HasPrefix(p, "/dev/") {
			devFiles = append(devFiles, f)
			continue
		}
		src := st.path(fmt.Sprintf("file-%d", i))
		if err := writeFile(src, f); err != nil {
			return rep.Fail(err)
		}
		// Executable (our tmpfs is not noexec): a file may be a script,
		// as in /dev/pipes.
		mounts = append(mounts, rootMount{target: p, mount: func(dst string) error { return bindFromStep(src, dst) }})
	}

	// The root is mounted once the build network is up.
	if err := waitMount(); err != nil {
		return rep.Fail(err)
	}
	if cs.ResolvConf != "" {
		if err := copyResolv(cs.ResolvConf); err != nil {
			return rep.Fail(fmt.Errorf("reading resolv.conf: %w", err))
		}
	}

	// Mount points missing from the image go into a stub layer on our
	// tmpfs, stacked on top of the image's lowers, and never into the upper
	// dir: they must not reach the layer, and creating them through the
	// merged view would also copy up their parents (/etc). Which ones are
	// missing is decided on a read-only view of the lowers.
	// An earlier step's plan, when it holds for these layers, spares the
	// view and the walks.
	plan := cs.Stubs
	if !plan.reusable(mounts) {
		view := ""
		if len(cs.Rootfs.Lowers) > 0 {
			if _, err := MountOverlay(probe, Overlay{Lowers: cs.Rootfs.Lowers, Empty: empty}); err != nil {
				return rep.Fail(err)
			}
			view = probe
		}
		var reusable bool
		var err error
		if plan, reusable, err = planStubs(view, mounts); err != nil {
			return rep.Fail(err)
		}
		if reusable {
			rep.Send(Msg{Stubs: plan})
		}
	}
	if err := makeStubs(stubs, plan.Stubs); err != nil {
		return rep.Fail(err)
	}
	needStubs := len(plan.Stubs) > 0
	// Everything on our tmpfs is written: from here on it is read-only,
	// and so is every bind of a file from it (a bind mount starts with
	// the flags of the mount it comes from), one mount call for all.
	if err := unix.Mount("", st.dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return rep.Fail(fmt.Errorf("making the step's tmpfs read-only: %w", err))
	}
	o := Overlay{
		Lowers: cs.Rootfs.Lowers, Empty: empty,
		Upper: cs.Rootfs.Upper, Work: cs.Rootfs.Work, Volatile: cs.Volatile,
	}
	if needStubs {
		o.Stubs = stubs
	}
	used, err := MountOverlay(merged, o)
	if err != nil {
		return rep.Fail(err)
	}
	if cs.Volatile && !used {
		rep.Send(Msg{NoVolatile: true})
	}
	for _, m := range mounts {
		dst, err := mountPoint(merged, m)
		if err != nil {
			return rep.Fail(err)
		}
		if err := m.mount(dst); err != nil {
			return rep.Fail(err)
		}
	}

	if cs.Guards.NoDevices {
		if err := nodevBelow(merged); err != nil {
			return rep.Fail(err)
		}
	}
	if err := PivotRoot(merged); err != nil {
		return rep.Fail(err)
	}
	for _, f := range devFiles {
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			return rep.Fail(fmt.Errorf("creating %s: %w", filepath.Dir(f.Path), err))
		}
		if err := writeFile(f.Path, f); err != nil {
			return rep.Fail(err)
		}
	}
	if err := unix.Sethostname([]byte(cs.Hostname)); err != nil {
		return rep.Fail(fmt.Errorf("setting hostname: %w", err))
	}
	id, err := lookupUser(cs.User)
	if err != nil {
		return rep.Fail(err)
	}
	if err := os.MkdirAll(cs.Cwd, 0o755); err != nil {
		return rep.Fail(fmt.Errorf("creating working directory %s: %w", cs.Cwd, err))
	}
	if err := unix.Chdir(cs.Cwd); err != nil {
		return rep.Fail(fmt.Errorf("entering working directory %s: %w", cs.Cwd, err))
	}
	// WORKDIR /proc/self/fd/N would reach whatever directory the init
	// holds open as fd N (runc's CVE-2024-21626 was a leaked host cgroup
	// directory). The init holds none, and getcwd makes sure: a directory
	// outside the new root has no path from it.
	if _, err := unix.Getwd(); err != nil {
		return rep.Fail(fmt.Errorf("entering working directory %s: it is outside the container's root", cs.Cwd))
	}
	// Nothing of the command may run outside the step's cgroup.
	if err := waitPlaced(); err != nil {
		return rep.Fail(err)
	}
	// Before the seccomp filter and the capability drop: raising a hard
	// limit needs CAP_SYS_RESOURCE.
	if err := setRlimits(cs.Rlimits); err != nil {
		return rep.Fail(err)
	}
	if err := hardenCommand(cs); err != nil {
		return rep.Fail(err)
	}
	return runInit(rep, cs, id)
}

// prepareProcDev mounts the step's /dev at dev and a new proc, for the new
// PID namespace (the command sees only its own processes), at proc; with
// mask, the proc is masked (maskProc, with dev's null). Both are then
// moved into the root.
func prepareProcDev(proc, dev, roProc string, shmSize int64, mask bool) error {
	if err := mountDev(dev, shmSize); err != nil {
		return err
	}
	if err := MountFS("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if !mask {
		return nil
	}
	return maskProc(proc, filepath.Join(dev, "null"), roProc)
}

// moveMount moves the mount at src, with the mounts on top of it, to dst.
func moveMount(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving %s to %s: %w", src, dst, err)
	}
	return nil
}

// bindFromStep binds src, a file on the step's tmpfs, at dst. The bind is
// read-only, nosuid and nodev as the tmpfs is by then.
func bindFromStep(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s at %s: %w", src, dst, err)
	}
	return nil
}

// writeFile creates one of the step's Files at p.
func writeFile(p string, f File) error {
	mode := f.Mode.Perm() | f.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
	if mode == 0 {
		mode = 0o644
	}
	if err := os.WriteFile(p, f.Data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", f.Path, err)
	}
	// WriteFile's mode misses the special bits.
	if err := os.Chmod(p, mode); err != nil {
		return fmt.Errorf("writing %s: %w", f.Path, err)
	}
	return nil
}

// mountPoint resolves m's target in the merged root, as the command will
// see it: symlinks planted by the image stay inside the root. The stub
// layer already holds every mount point missing from the image; one can
// still be missing when an earlier mount covers it (a RUN --mount below
// /dev, or below another RUN --mount), and is then created in that mount,
// never in the upper dir.
func mountPoint(merged string, m rootMount) (string, error) {
	rel, exists, err := resolveInRoot(merged, m.target)
	if err != nil {
		return "", fmt.Errorf("resolving mount point %s: %w", m.target, err)
	}
	if rel == "" {
		// /proc planted as a symlink to "/": proc over the whole root.
		return "", fmt.Errorf("mount point %s resolves to the root of the image", m.target)
	}
	dst := filepath.Join(merged, rel)
	if exists {
		return dst, nil
	}
	// Created through rooted, which refuses a symlink anywhere on the way:
	// rel is symlink-free, so dst names exactly what was created.
	root, err := rooted.Open(merged)
	if err != nil {
		return "", fmt.Errorf("creating mount point %s: %w", m.target, err)
	}
	defer root.Close()
	parent, err := root.MkdirAll(path.Dir("/"+rel), 0o755, nil)
	if err != nil {
		return "", fmt.Errorf("creating mount point %s: %w", m.target, err)
	}
	defer parent.Close()
	name := path.Base(rel)
	if m.dir {
		err = parent.Mkdir(name, 0o755)
	} else {
		var f *os.File
		if f, err = parent.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644); err == nil {
			err = f.Close()
		}
	}
	if err != nil {
		return "", fmt.Errorf("creating mount point %s: %w", m.target, err)
	}
	return dst, nil
}

// userMount turns a RUN --mount into a mount on the image's tree. A bind
// source is a host path that the caller chose and resolved; only the
// target is the image's to interpret.
func userMount(m Mount) (rootMount, error) {
	switch m.Type {
	case "tmpfs":
		var flags uintptr = unix.MS_NOSUID | unix.MS_NODEV
		if m.Readonly {
			flags |= unix.MS_RDONLY
		}
		data := ""
		if m.Size > 0 {
			data = "size=" + strconv.FormatInt(m.Size, 10)
		}
		return rootMount{target: m.Target, dir: true, mount: func(dst string) error {
			return MountFS("tmpfs", dst, "tmpfs", flags, data)
		}}, nil
	case "bind":
		fi, err := os.Stat(m.Source)
		if err != nil {
			return rootMount{}, fmt.Errorf("mounting %s: %w", m.Target, err)
		}
		return rootMount{target: m.Target, dir: fi.IsDir(), mount: func(dst string) error {
			return bindMount(m.Source, dst, m.Readonly)
		}}, nil
	case "layers":
		return rootMount{target: m.Target, dir: true, mount: func(dst string) error {
			if _, err := MountOverlay(m.Stage, Overlay{Lowers: m.Lowers, Upper: m.Upper, Work: m.Work}); err != nil {
				return err
			}
			rel, _, err := resolveInRoot(m.Stage, m.SubPath)
			if err != nil {
				return fmt.Errorf("mounting %s: resolving %s: %w", m.Target, m.SubPath, err)
			}
			return bindMount(filepath.Join(m.Stage, rel), dst, m.Readonly)
		}}, nil
	}
	return rootMount{}, fmt.Errorf("mounting %s: unknown mount type %q", m.Target, m.Type)
}

// joinNetwork makes the sandbox child's thread, and so the command it
// starts, enter the build's network namespace (fd NetnsFD).
func joinNetwork(pre *Prelude) error {
	if !pre.JoinNet {
		return nil
	}
	defer unix.Close(NetnsFD)
	if err := unix.Setns(NetnsFD, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("joining the build's network namespace: %w", err)
	}
	return nil
}

// setRlimits sets the --ulimit limits on PID 1, from which the command
// inherits them. Through package syscall, which then hands a changed
// RLIMIT_NOFILE to the children it starts instead of the one the
// process started with.
func setRlimits(limits []Rlimit) error {
	for _, l := range limits {
		if err := syscall.Setrlimit(l.Resource, &syscall.Rlimit{Cur: l.Soft, Max: l.Hard}); err != nil {
			return fmt.Errorf("setting resource limit %d (--ulimit): %w", l.Resource, err)
		}
	}
	return nil
}
