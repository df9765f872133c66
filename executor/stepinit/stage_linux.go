package stepinit

import (
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/userns"
)

// staged is what a RUN child sets up from its Prelude alone, before it
// has its Spec: its step tmpfs, and the step's /proc, /dev and /sys,
// which owe nothing to the image. A child started ahead of its step
// (executor.Warm) does this while it waits; the step then only moves
// them into its root.
type staged struct {
	dir string // the step tmpfs
	// The step's /proc, /dev and /sys are made in stage, as a root with
	// only them: maskSys masks below its sys as it would in the image's
	// root.
	stage, proc, dev, sys string
}

// path is name on the step tmpfs.
func (s *staged) path(name string) string { return filepath.Join(s.dir, name) }

// stage joins the build's network (sysfs shows the network devices of
// the mounter's namespace), mounts the step tmpfs, and makes /proc, /dev,
// /sys and their masks, on the calling thread.
func stage(pre *Prelude) (*staged, error) {
	if err := joinNetwork(pre); err != nil {
		return nil, err
	}
	if pre.NetNone {
		// A namespace of the step's own, where lo starts down; builds
		// with --network=none still expect localhost to work.
		if err := LoopbackUp(); err != nil {
			return nil, err
		}
	}
	s := &staged{dir: pre.StepDir}
	if err := MountStepTmpfs(s.dir, "empty", "probe", "stubs", "root", "proc", "stage", "stage/proc", "stage/dev", "stage/sys"); err != nil {
		return nil, err
	}
	s.stage = s.path("stage")
	s.proc, s.dev, s.sys = filepath.Join(s.stage, "proc"), filepath.Join(s.stage, "dev"), filepath.Join(s.stage, "sys")
	if err := mountSys(s.sys, pre); err != nil {
		return nil, err
	}
	// roProc is where maskProc binds a read-only view of the step's
	// /proc.
	mask := !pre.Insecure
	if err := prepareProcDev(s.proc, s.dev, s.path("proc"), pre.ShmSize, mask); err != nil {
		return nil, err
	}
	if mask {
		if err := maskSys(s.stage); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// mountSys mounts the step's /sys at dst: read-only but for an insecure
// step, as in a privileged container.
func mountSys(dst string, pre *Prelude) error {
	if userns.Running() && !pre.NetNone && !pre.JoinNet {
		// The kernel lets a user namespace mount sysfs only for a
		// network namespace it owns; with the host's network the host's
		// /sys, read-only but for an insecure step, is what a rootless
		// step sees.
		return bindSys(dst, !pre.Insecure)
	}
	// sysfs shows the network devices of the mounter's network
	// namespace: only lo with --network=none.
	flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if pre.Insecure {
		flags &^= unix.MS_RDONLY
	}
	return MountFS("sysfs", dst, "sysfs", flags, "")
}
