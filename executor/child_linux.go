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

// runChildCopy mounts the destination (and source) and runs the copier.
func runChildCopy(rep reporter, cs *childSpec) int {
	if err := mountStepTmpfs(cs.StepDir, "empty", "dst", "src"); err != nil {
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
	if err := copier.Do(src, dst, cs.Op); err != nil {
		m := childMsg{Done: true, Error: err.Error()}
		notFoundInfo(err, &m)
		rep.send(m)
		return 0
	}
	rep.send(childMsg{Done: true})
	return 0
}
