//go:build !linux

package executor

import (
	"context"
	"errors"
	"fmt"
)

// Init does nothing outside Linux: there is no sandbox child.
func Init() {}

// Run needs Linux namespaces and overlayfs.
func Run(ctx context.Context, spec RunSpec) error {
	return fmt.Errorf("running step: %w", errors.ErrUnsupported)
}

// Copy needs Linux namespaces and overlayfs.
func Copy(ctx context.Context, spec CopySpec) error {
	return fmt.Errorf("copying: %w", errors.ErrUnsupported)
}

// CgroupsAvailable: cgroups are Linux's.
func CgroupsAvailable() error { return errors.ErrUnsupported }

// WaitCgroupsRemoved: there are no step cgroups to wait for.
func WaitCgroupsRemoved() error { return nil }

// WaitSandboxExits: there are no sandboxes to wait for.
func WaitSandboxExits() {}

// CgroupsExpected: cgroups are Linux's.
func CgroupsExpected() error { return errors.ErrUnsupported }

// EnterUserNS does nothing outside Linux: kiln runs as it was started.
func EnterUserNS() (code int, done bool) { return 0, false }

// Rootless: user namespaces are Linux's.
func Rootless() bool { return false }

// RootlessError: nothing was attempted outside Linux.
func RootlessError() error { return nil }

// SandboxInit: there is no sandbox outside Linux.
func SandboxInit() string { return "none (RUN steps need Linux)" }

// PrepareInit does nothing: RUN steps need Linux.
func PrepareInit() {}

// Warm does nothing: RUN steps need Linux.
type Warm struct{}

// NewWarm returns a Warm that starts nothing.
func NewWarm(context.Context) *Warm { return &Warm{} }

// NewWarmIn returns a Warm that starts nothing.
func NewWarmIn(context.Context, func() (string, error)) *Warm { return &Warm{} }

// Close does nothing.
func (*Warm) Close() {}

// Expect does nothing.
func (*Warm) Expect(int) {}

// Prestart does nothing.
func (*Warm) Prestart(*Network, Sandbox) {}

// StubCache keeps nothing: RUN steps need Linux.
type StubCache struct{}
