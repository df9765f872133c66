package cache

import (
	"context"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyFileRange copies src from its start to dst at dst's offset, in the
// kernel where it can, in slices so that a cancelled build stops soon.
// Where copy_file_range cannot (another filesystem on an old kernel, a
// filesystem without it), it copies through user space.
func copyFileRange(ctx context.Context, dst, src *os.File) (int64, error) {
	var off, n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		c, err := unix.CopyFileRange(int(src.Fd()), &off, int(dst.Fd()), nil, 64<<20, 0)
		if err != nil {
			if n == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
				return io.Copy(dst, io.NewSectionReader(src, 0, 1<<62))
			}
			return n, err
		}
		if c == 0 {
			return n, nil
		}
		n += int64(c)
	}
}
