//go:build !linux

package layer

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// WriteTar needs Linux: overlay-format directories exist only there.
func WriteTar(ctx context.Context, dir string, w io.Writer) error {
	return fmt.Errorf("writing layer tar of %s: %w", dir, errors.ErrUnsupported)
}

// WriteTarWith needs Linux: overlay-format directories exist only there.
func WriteTarWith(ctx context.Context, dir string, w io.Writer, opt TarOptions) error {
	return fmt.Errorf("writing layer tar of %s: %w", dir, errors.ErrUnsupported)
}

// Unpack needs Linux: overlay-format directories exist only there.
func Unpack(ctx context.Context, r io.Reader, dir string) error {
	return fmt.Errorf("unpacking layer into %s: %w", dir, errors.ErrUnsupported)
}
