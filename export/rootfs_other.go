//go:build !linux

package export

import (
	"context"
	"errors"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var errNeedsLinux = errors.New("exporting a root filesystem is only supported on Linux")

type flattened struct{}

func flatten(context.Context, v1.Image, string, bool) (*flattened, error) { return nil, errNeedsLinux }

func (*flattened) close()                                    {}
func (*flattened) finish(string) error                       { return errNeedsLinux }
func (*flattened) moveInto(context.Context, string) error    { return errNeedsLinux }
func (*flattened) writeTar(context.Context, io.Writer) error { return errNeedsLinux }
