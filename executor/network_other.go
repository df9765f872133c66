//go:build !linux

package executor

import (
	"context"
	"errors"
	"fmt"
)

// Network is a build's isolated network namespace: Linux's.
type Network struct {
	// Helper is the user-mode network program.
	Helper string
}

// NetworkHelpers finds none outside Linux.
func NetworkHelpers() (names, paths []string) { return nil, nil }

// NewNetwork needs Linux network namespaces.
func NewNetwork(ctx context.Context, dir string) (*Network, error) {
	return nil, fmt.Errorf("setting up the build network: %w", errors.ErrUnsupported)
}

// NewNetworkWarm needs Linux network namespaces.
func NewNetworkWarm(ctx context.Context, dir string, _ *Warm, _ Sandbox) (*Network, error) {
	return NewNetwork(ctx, dir)
}

// Close does nothing outside Linux.
func (n *Network) Close() error { return nil }

// Release is Close without waiting for the helper to exit.
func (n *Network) Release() error { return nil }

// StartNetworkWarm needs Linux network namespaces.
func StartNetworkWarm(ctx context.Context, dir string, _ *Warm, _ Sandbox) (*Network, error) {
	return NewNetwork(ctx, dir)
}
