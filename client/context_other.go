//go:build !linux

package client

import (
	"context"
	"errors"
	"io"
)

// WriteContext needs Linux: the context is read through package rooted.
func WriteContext(context.Context, io.Writer, ContextSpec) error {
	return errors.New("sending a build context needs Linux")
}
