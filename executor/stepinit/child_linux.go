package stepinit

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/seccomp"
)

// Reporter sends Msgs to the parent on ReportFD.
type Reporter struct{ enc *json.Encoder }

// Send sends m.
func (r Reporter) Send(m Msg) {
	// Nothing useful to do if the parent is gone: Pdeathsig ends us.
	_ = r.enc.Encode(m)
}

// Fail reports a setup error and returns the child's exit status.
func (r Reporter) Fail(err error) int {
	r.Send(Msg{Done: true, Error: err.Error()})
	return 1
}

// Begin is what every sandbox child does first: it pins itself to one
// thread, keeps its inherited descriptors from the command, and returns
// the reporter and a decoder of the spec pipe (which the caller closes
// when done with it).
func Begin() (Reporter, *json.Decoder, *os.File) {
	// The capability bounding set is per thread, and the command is forked
	// from the thread that starts it: all of the child's work stays on
	// this one thread.
	runtime.LockOSThread()
	// Every inherited descriptor but 0, 1 and 2 must stay out of the user
	// command, including the two pipes to the parent (fds 3 and 4 arrive
	// without close-on-exec). close_range needs Linux 5.11; the pipes are
	// marked individually for older kernels.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		unix.CloseOnExec(SpecFD)
		unix.CloseOnExec(ReportFD)
	}
	rep := Reporter{enc: json.NewEncoder(os.NewFile(ReportFD, "report"))}
	specFile := os.NewFile(SpecFD, "spec")
	return rep, json.NewDecoder(specFile), specFile
}

// Prepare readies the child's mount namespace: modes below are meant
// literally (the command gets the usual 022), and nothing mounted from here
// on propagates to the host.
func Prepare() error {
	unix.Umask(0)
	// Our mount namespace starts as a copy of the host's; with shared
	// propagation every mount below would appear on the host too.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	return nil
}

// Main is the RUN sandbox child: it reads its Prelude and Spec from
// SpecFD, reports on ReportFD, and returns its exit status.
func Main() int {
	rep, dec, specFile := Begin()
	// What does not depend on the step is done before its spec is read:
	// a child started ahead of its step (executor.Warm) waits for the
	// spec, and the step then finds it done. On this thread: every thread
	// of ours is made, and torn down at the end, on the steps' time.
	warmUp()
	err := Prepare()
	var pre Prelude
	if derr := dec.Decode(&pre); derr != nil {
		specFile.Close()
		return rep.Fail(fmt.Errorf("reading sandbox prelude: %w", derr))
	}
	var st *staged
	if err == nil {
		st, err = stage(&pre)
	}
	var cs Spec
	if derr := dec.Decode(&cs); derr != nil {
		specFile.Close()
		return rep.Fail(fmt.Errorf("reading sandbox spec: %w", derr))
	}
	switch {
	case err != nil:
	case cs.Mode != "run":
		err = fmt.Errorf("the sandbox init runs RUN steps only, not mode %q", cs.Mode)
	case cs.Prelude != pre:
		err = fmt.Errorf("the sandbox spec (%+v) differs from the prelude the sandbox was started with (%+v)", cs.Prelude, pre)
	}
	if err != nil {
		specFile.Close()
		return rep.Fail(err)
	}
	// The child learns on the same pipe when it may mount its root, and
	// when the parent has placed it in the step's cgroup; see executor's
	// child.serve.
	waitMount := func() error {
		var m MountReady
		if err := dec.Decode(&m); err != nil || !m.Ready {
			return fmt.Errorf("waiting for the build network: %v", err)
		}
		return nil
	}
	waitPlaced := func() error {
		defer specFile.Close()
		var p Placement
		if err := dec.Decode(&p); err != nil || !p.Placed {
			return fmt.Errorf("waiting to be placed in the step's cgroup: %v", err)
		}
		return nil
	}
	return runStep(rep, &cs, st, waitMount, waitPlaced)
}

// warmUp does once, off the step's path, what starting the command would
// otherwise do first: build the seccomp filter, catch the forwarded
// signals, and Go's check that pidfds work (os.StartProcess makes it on
// first use, cloning a child that exits). Before any file of the step is
// opened: that child holds a copy of every descriptor until it exits,
// and a copy of a file open for writing on the step's tmpfs would make
// its remount read-only fail (EBUSY).
func warmUp() {
	seccomp.Prepare()
	forwardedSignals()
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Release()
	}
}
