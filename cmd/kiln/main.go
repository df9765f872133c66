// Command kiln builds container images from Dockerfiles without a daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/internal/gcdelay"
)

// Exit codes: 1 the build failed, 2 the command line was wrong, 128+signal
// when interrupted.
const (
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	executor.Init() // a sandbox child never returns from here
	finishDurable() // nor does the detached sync of a closed store
	// A normal user's kiln runs again as root of a user namespace; this
	// process only waits for it.
	if code, done := executor.EnterUserNS(); done {
		os.Exit(code)
	}
	gcdelay.Start()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// remember which signal it was, for the exit code
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { interrupted.Store(<-sigs) }()
	err := newRootCmd().ExecuteContext(ctx)
	// Step cgroups are removed in the background; none outlives kiln.
	if cerr := executor.WaitCgroupsRemoved(); cerr != nil {
		fmt.Fprintf(os.Stderr, "kiln: warning: %v (the cgroup is empty; the next kiln removes it)\n", cerr)
	}
	// Archives an export replaced, unless a detached kiln took them.
	for _, p := range export.TakeReplaced() {
		os.Remove(p)
	}
	code := exitCode(ctx, err)
	stop()
	os.Exit(code)
}

// interrupted records which signal ended the build.
var interrupted atomic.Value

func exitCode(ctx context.Context, err error) int {
	if err == nil {
		return 0
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "kiln: interrupted; the build was stopped and its steps cleaned up")
		if s, ok := interrupted.Load().(os.Signal); ok && s == syscall.SIGTERM {
			return 143
		}
		return 130
	}
	var es *exitStatus
	if errors.As(err, &es) {
		return es.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "kiln: %v\n", err)
		return exitUsage
	}
	printError(os.Stderr, err)
	return exitFailed
}

// usageError is a mistake on the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}
