//go:build !linux

package cache

import (
	"context"
	"io"
	"os"
)

func copyFileRange(_ context.Context, dst, src *os.File) (int64, error) {
	return io.Copy(dst, io.NewSectionReader(src, 0, 1<<62))
}
