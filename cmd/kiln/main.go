// Command kiln builds container images from Dockerfiles without a daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kiln-build/kiln/executor"
)

// Exit codes: 1 the build failed, 2 the command line was wrong, 128+signal
// when interrupted.
const (
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	executor.Init() // a sandbox child never returns from here
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(ctx, err))
}

func exitCode(ctx context.Context, err error) int {
	if err == nil {
		return 0
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "kiln: interrupted")
		return 130
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
