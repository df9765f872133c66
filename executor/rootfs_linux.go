package executor

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// rootMount is a mount on a path of the image's own tree (as opposed to
// the ones inside our /dev tmpfs). Its target may have to be created as a
// stub, which must then not end up in the layer.
type rootMount struct {
	target string // inside the rootfs
	dir    bool   // the mount point is a directory (else a file)
	mount  func(dst string) error
}

// runChildRun sets up the RUN sandbox and runs the command as PID 1's
// child. It returns the exit status for the sandbox child.
func runChildRun(rep reporter, cs *childSpec) int {
	var (
		empty  = filepath.Join(cs.StepDir, "empty")
		probe  = filepath.Join(cs.StepDir, "probe")
		merged = filepath.Join(cs.StepDir, "root")
		hosts  = filepath.Join(cs.StepDir, "hosts")
	)
	for _, d := range []string{empty, probe, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return rep.fail(fmt.Errorf("creating mount point: %w", err))
		}
	}
	hostsData := fmt.Sprintf("127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", cs.Hostname)
	if err := os.WriteFile(hosts, []byte(hostsData), 0o644); err != nil {
		return rep.fail(fmt.Errorf("writing hosts file: %w", err))
	}

	mounts := []rootMount{
		{target: "/proc", dir: true, mount: func(dst string) error {
			// A new proc for the new PID namespace: the command sees only
			// its own processes.
			return mount("proc", dst, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{target: "/dev", dir: true, mount: mountDev},
		{target: "/sys", dir: true, mount: func(dst string) error {
			// sysfs shows the network devices of the mounter's network
			// namespace: only lo with --network=none.
			return mount("sysfs", dst, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{target: "/etc/hosts", mount: func(dst string) error { return bindReadOnly(hosts, dst) }},
	}
	// Without a resolv.conf on the host there is nothing to bind, and the
	// image's own (if any) stays visible, as with BuildKit.
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		mounts = append(mounts, rootMount{target: "/etc/resolv.conf", mount: func(dst string) error {
			return bindReadOnly("/etc/resolv.conf", dst)
		}})
	}

	// Decide on mount targets against a read-only view of the lowers, and
	// create missing ones directly in the upper dir before mounting it.
	// Creating them through the merged view instead would copy up their
	// existing parents (/etc), which would then reach the layer even after
	// the stubs are removed.
	view := ""
	if len(cs.Rootfs.Lowers) > 0 {
		if _, err := mountOverlay(probe, Rootfs{Lowers: cs.Rootfs.Lowers}, empty, false); err != nil {
			return rep.fail(err)
		}
		view = probe
	}
	targets := make([]string, 0, len(mounts))
	var stubs []stub
	for _, m := range mounts {
		rel, exists, err := resolveInRoot(view, m.target)
		if err != nil {
			return rep.fail(fmt.Errorf("resolving mount point %s: %w", m.target, err))
		}
		if !exists {
			if cs.Rootfs.Upper == "" {
				// A read-only rootfs cannot grow mount points.
				targets = append(targets, "")
				continue
			}
			if stubs, err = createStub(view, cs.Rootfs.Upper, rel, m.dir, stubs); err != nil {
				rep.send(childMsg{Stubs: stubs})
				return rep.fail(fmt.Errorf("creating mount point %s: %w", m.target, err))
			}
		}
		targets = append(targets, rel)
	}
	if len(stubs) > 0 {
		rep.send(childMsg{Stubs: stubs})
	}

	used, err := mountOverlay(merged, cs.Rootfs, empty, cs.Volatile)
	if err != nil {
		return rep.fail(err)
	}
	if cs.Volatile && !used {
		rep.send(childMsg{NoVolatile: true})
	}
	for i, m := range mounts {
		if targets[i] == "" {
			continue
		}
		if err := m.mount(filepath.Join(merged, targets[i])); err != nil {
			return rep.fail(err)
		}
	}

	if err := pivotRoot(merged); err != nil {
		return rep.fail(err)
	}
	if err := unix.Sethostname([]byte(cs.Hostname)); err != nil {
		return rep.fail(fmt.Errorf("setting hostname: %w", err))
	}
	if cs.NetNone {
		if err := loopbackUp(); err != nil {
			return rep.fail(err)
		}
	}
	id, err := lookupUser(cs.User)
	if err != nil {
		return rep.fail(err)
	}
	if err := os.MkdirAll(cs.Cwd, 0o755); err != nil {
		return rep.fail(fmt.Errorf("creating working directory %s: %w", cs.Cwd, err))
	}
	if err := unix.Chdir(cs.Cwd); err != nil {
		return rep.fail(fmt.Errorf("entering working directory %s: %w", cs.Cwd, err))
	}
	unix.Umask(0o022)
	return runInit(rep, cs, id)
}

// createStub creates the missing mount point rel (and its missing parents)
// in upper, appending what it created to stubs. Parents that exist in the
// lower view get its mode, owner and times, so that the merged view shows
// them unchanged.
func createStub(view, upper, rel string, dir bool, stubs []stub) ([]stub, error) {
	type restore struct {
		path string
		fi   fs.FileInfo
	}
	var times []restore
	cur := ""
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		cur = filepath.Join(cur, c)
		last := i == len(parts)-1
		p := filepath.Join(upper, cur)
		if _, err := os.Lstat(p); err == nil {
			continue // created for an earlier target
		}
		var lower fs.FileInfo
		if view != "" {
			lower, _ = os.Lstat(filepath.Join(view, cur))
		}
		var err error
		switch {
		case last && !dir:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
				err = f.Close()
			}
		case lower != nil && lower.IsDir():
			st := lower.Sys().(*syscall.Stat_t)
			if err = os.Mkdir(p, lower.Mode().Perm()); err == nil {
				err = os.Lchown(p, int(st.Uid), int(st.Gid))
			}
			if err == nil {
				err = os.Chmod(p, lower.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
			}
			times = append(times, restore{p, lower})
		default:
			err = os.Mkdir(p, 0o755)
		}
		if err != nil {
			return stubs, err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return stubs, err
		}
		st := fi.Sys().(*syscall.Stat_t)
		stubs = append(stubs, stub{Path: cur, Dir: fi.IsDir(), Mode: fi.Mode(), UID: int(st.Uid), GID: int(st.Gid)})
	}
	// Creating children changed the parents' mtimes.
	for i := len(times) - 1; i >= 0; i-- {
		st := times[i].fi.Sys().(*syscall.Stat_t)
		ts := []unix.Timespec{unix.NsecToTimespec(syscall.TimespecToNsec(st.Atim)), unix.NsecToTimespec(syscall.TimespecToNsec(st.Mtim))}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, times[i].path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return stubs, err
		}
	}
	return stubs, nil
}
