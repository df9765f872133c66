// Package ctxio makes long copies stop soon after their context is
// cancelled: io.Copy knows nothing of contexts, and a cancelled build or
// a client that hung up should not keep a copy of gigabytes going.
package ctxio

import (
	"context"
	"io"
)

// Reader returns a reader of r that fails with ctx's error at the first
// Read after ctx is done.
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
