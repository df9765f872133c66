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
