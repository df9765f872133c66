//go:build !linux

package export

import (
	"context"
	"errors"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var errNeedsLinux = errors.New("exporting a root filesystem is only supported on Linux")

type applier struct{}

func flatten(context.Context, v1.Image, string, bool) (*applier, error) { return nil, errNeedsLinux }

func (*applier) finish(string) error                       { return errNeedsLinux }
func (*applier) writeTar(context.Context, io.Writer) error { return errNeedsLinux }
