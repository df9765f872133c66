package stepinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/devices"
	"github.com/kiln-build/kiln/internal/mountinfo"
)

// MountFS is unix.Mount with the error phrased for the build log.
func MountFS(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s at %s: %w", fstype, target, err)
	}
	return nil
}

// BindReadOnly bind-mounts source at target read-only, with extra mount
// flags. A bind mount takes the flags of its source; read-only needs a
// second, remount call.
func BindReadOnly(source, target string, extra uintptr) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s at %s: %w", source, target, err)
	}
	flags := unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | extra
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("making %s read-only: %w", target, err)
	}
	return nil
}

// bindMount binds source (recursively: a cache directory may hold mounts
// of its own) at target, read-only if asked.
func bindMount(source, target string, readonly bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding %s at %s: %w", source, target, err)
	}
	if !readonly {
		return nil
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("making %s read-only: %w", target, err)
	}
	return nil
}

// devSource names the tmpfs of the sandbox's /dev in the mount table, so
// that nodevBelow finds it wherever an image's symlinks put it.
const devSource = "kiln-dev"

// mountDev mounts a small tmpfs at dst with the standard devices, a private
// devpts, shm and mqueue. The image's own /dev (often device nodes frozen
// in a layer) is hidden: the command must not reach host devices.
// shmSize is the size of /dev/shm in bytes, 0 for 64 MiB.
func mountDev(dst string, shmSize int64) error {
	if shmSize <= 0 {
		shmSize = 64 << 20
	}
	if err := MountFS(devSource, dst, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	for _, d := range devices.Nodes {
		p := filepath.Join(dst, d.Name)
		err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.Major, d.Minor)))
		if errors.Is(err, unix.EPERM) {
			// Without CAP_MKNOD (kiln itself in a container, or in a user
			// namespace), bind the host's node instead.
			err = bindDevice("/dev/"+d.Name, p)
		}
		if err != nil {
			return fmt.Errorf("creating device %s: %w", p, err)
		}
	}
	dirs := []struct {
		name, fstype, data string
		flags              uintptr
		mode               uint32
	}{
		// newinstance: a devpts of our own, so ptys of the command are not
		// the host's. gid 5 is "tty" by convention, as runc does.
		{"pts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5", unix.MS_NOSUID | unix.MS_NOEXEC, 0o755},
		{"shm", "tmpfs", "mode=1777,size=" + strconv.FormatInt(shmSize, 10), unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, 0o1777},
		{"mqueue", "mqueue", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, 0o755},
	}
	for _, d := range dirs {
		p := filepath.Join(dst, d.name)
		if err := os.Mkdir(p, os.FileMode(d.mode&0o777)); err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
		if err := MountFS(d.fstype, p, d.fstype, d.flags, d.data); err != nil {
			return err
		}
	}
	links := [][2]string{
		{"pts/ptmx", "ptmx"},
		{"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dst, l[1])); err != nil {
			return fmt.Errorf("creating /dev/%s: %w", l[1], err)
		}
	}
	return nil
}

// bindSys binds the host's /sys, with the mounts below it, at dst, all
// read-only if asked. Recursive, because a user namespace may not bind a
// mount without the mounts locked on top of it (cgroup hierarchies,
// securityfs); a fresh sysfs, as root mounts it, has none of them, so they
// become read-only as well.
func bindSys(dst string, readonly bool) error {
	if err := unix.Mount("/sys", dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding /sys at %s: %w", dst, err)
	}
	if !readonly {
		return nil
	}
	points, err := mountsBelow(dst)
	if err != nil {
		return err
	}
	for _, p := range points {
		if err := remountReadOnly(p); err != nil {
			return err
		}
	}
	return nil
}

// remountReadOnly makes the bind mount at p read-only, nosuid, nodev and
// noexec. Its atime mode is locked in a user namespace and must be kept:
// the kernel refuses a remount that would change it (or drop any of the
// other three).
func remountReadOnly(p string) error {
	// nosuid, nodev and noexec as root's sysfs has them; adding flags is
	// allowed.
	return remountAdding(p, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
}

// mountsBelow lists the mount points at and below dir, parents first, from
// /proc/self/mountinfo.
func mountsBelow(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("listing mounts below %s: %w", dir, err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		// ID parent-ID major:minor root mount-point options ...
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := mountinfo.Unescape(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	return points, nil
}

// nodevBelow remounts every mount at and below root nodev, but the
// sandbox's /dev and what it holds: its tmpfs, devpts and the nodes bound
// from the host. It is the device guard of a step without a device filter
// (see guards): with CAP_MKNOD dropped as well, the only device nodes the
// step can open are those kiln put in /dev, and the binds of its null
// device that mask files in /proc (maskProc), which stay readable as
// empty files.
func nodevBelow(root string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("listing mounts below %s: %w", root, err)
	}
	type entry struct{ point, fstype, source, fsroot string }
	var mounts []entry
	dev := ""
	for _, line := range strings.Split(string(b), "\n") {
		// id parent dev root point options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 2 {
			continue
		}
		e := entry{point: mountinfo.Unescape(fields[4]), fstype: tail[0], source: tail[1], fsroot: mountinfo.Unescape(fields[3])}
		if e.point != root && !strings.HasPrefix(e.point, root+"/") {
			continue
		}
		if e.source == devSource && e.fstype == "tmpfs" && e.fsroot == "/" {
			dev = e.point
		}
		mounts = append(mounts, e)
	}
	if dev == "" {
		return fmt.Errorf("remounting nodev: the sandbox's /dev is not mounted below %s", root)
	}
	keep := map[string]bool{dev: true, filepath.Join(dev, "pts"): true}
	for _, d := range devices.Nodes {
		keep[filepath.Join(dev, d.Name)] = true
	}
	for _, m := range mounts {
		if m.source == devSource && m.fstype == "tmpfs" && m.fsroot == "/null" {
			continue // a mask: our null device bound over a file
		}
		if keep[m.point] {
			// Ours come first: a RUN --mount stacked on the same point
			// later (the table lists mounts in order) is not kept.
			delete(keep, m.point)
			continue
		}
		if err := remountAdding(m.point, unix.MS_NODEV); err != nil {
			return err
		}
	}
	return nil
}

// remountAdding adds flags to the mount at p, keeping the flags it has:
// a bind remount replaces them all, and a user namespace refuses to drop
// locked ones.
func remountAdding(p string, add uintptr) error {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return fmt.Errorf("reading the mount flags of %s: %w", p, err)
	}
	flags := uintptr(unix.MS_BIND|unix.MS_REMOUNT) | add
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_RDONLY, unix.MS_RDONLY},
		{unix.ST_NOSUID, unix.MS_NOSUID},
		{unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	if err := unix.Mount("", p, "", flags, ""); err != nil {
		return fmt.Errorf("remounting %s with flags %#x: %w", p, add, err)
	}
	return nil
}

func bindDevice(source, target string) error {
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return err
	}
	f.Close()
	return unix.Mount(source, target, "", unix.MS_BIND, "")
}

// PivotRoot makes newRoot the root of our mount namespace. pivot_root
// rather than chroot: chroot leaves the host tree mounted and reachable
// (a chroot is escaped with a second chroot and "cd .."); after
// pivot_root and detaching the old root, nothing of the host remains in
// the namespace. pivot_root(".", ".") stacks the old root on top of the
// new one, so no directory for it is needed in the image, where it would
// end up in the layer.
func PivotRoot(newRoot string) error {
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("entering %s: %w", newRoot, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivoting root to %s: %w", newRoot, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("entering new root: %w", err)
	}
	return nil
}

// LoopbackUp brings lo up in a new network namespace, where it starts
// down; builds with --network=none still expect localhost to work.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	return nil
}

// MaskedPaths are hidden from a RUN step as in Docker and BuildKit: kernel
// memory, key and timer information, firmware and power controls.
var MaskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}

// ReadonlyPaths are kernel knobs a RUN step may read but not turn; all of
// them below /proc (see maskProc).
var ReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// maskProc hides the MaskedPaths below /proc (/dev/null, at null, over a
// file, an empty read-only tmpfs over a directory) and makes the
// ReadonlyPaths read-only, in proc, a fresh procfs not yet in the new root
// (prepareProc): its names are the kernel's, so nothing of the image is
// walked. Paths the kernel lacks are skipped. The read-only paths are
// bound from one read-only bind of proc at roProc (outside the new root,
// gone with the old one): a bind starts with the flags of its source, so
// each takes one mount call instead of a bind and a remount.
func maskProc(proc, null, roProc string) error {
	if err := checkNull(null); err != nil {
		return err
	}
	var st unix.Stat_t
	for _, p := range MaskedPaths {
		name, ok := strings.CutPrefix(p, "/proc/")
		if !ok {
			continue // masked once sysfs is in the root (maskSys)
		}
		if err := maskOne(p, filepath.Join(proc, name), null); err != nil {
			return err
		}
	}
	procBound := false
	for _, p := range ReadonlyPaths {
		name, ok := strings.CutPrefix(p, "/proc/")
		if !ok {
			return fmt.Errorf("making %s read-only: not below /proc", p)
		}
		dst := filepath.Join(proc, name)
		if err := unix.Lstat(dst, &st); errors.Is(err, unix.ENOENT) {
			continue
		} else if err != nil {
			return fmt.Errorf("making %s read-only: %w", p, err)
		}
		if !procBound {
			if err := BindReadOnly(proc, roProc, unix.MS_NOEXEC); err != nil {
				return err
			}
			procBound = true
		}
		if err := unix.Mount(filepath.Join(roProc, name), dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding %s read-only: %w", p, err)
		}
	}
	return nil
}

// checkNull makes sure that null, which masks files, is the null device.
func checkNull(null string) error {
	var st unix.Stat_t
	if err := unix.Lstat(null, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		return fmt.Errorf("masking paths: %s is not the null device", null)
	}
	return nil
}

// maskOne hides dst, the masked path p: an empty read-only tmpfs over a
// directory, null over anything else; nothing when it does not exist.
func maskOne(p, dst, null string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dst, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("masking %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return MountFS("tmpfs", dst, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0")
	}
	if err := unix.Mount(null, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("masking %s: %w", p, err)
	}
	return nil
}

// maskSys hides the MaskedPaths below /sys in the new root, before
// pivot_root. Every path is resolved inside root, so an image (or a RUN
// --mount below /sys) that plants a symlink only moves where the mask
// goes, never onto the host.
func maskSys(root string) error {
	null, err := inRoot(root, "/dev/null")
	if err != nil {
		return err
	}
	if err := checkNull(null); err != nil {
		return err
	}
	for _, p := range MaskedPaths {
		if !strings.HasPrefix(p, "/sys/") {
			continue
		}
		dst, err := inRoot(root, p)
		if err != nil {
			return err
		}
		if err := maskOne(p, dst, null); err != nil {
			return err
		}
	}
	return nil
}

// inRoot resolves p inside root, as the command will see it.
func inRoot(root, p string) (string, error) {
	rel, _, err := resolveInRoot(root, p)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", p, err)
	}
	return filepath.Join(root, rel), nil
}
