package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// StdoutDest is the dest= of an output written to a stream instead of a
// file: -o -, dest=-, or an oci or tar output without dest, as in buildx.
// The caller hands the stream over in Output.Stdout.
const StdoutDest = "-"

// streamKey carries the stream of an output whose dest is StdoutDest from
// Write down to where the bytes are written.
type streamKey struct{}

// withStream makes writeDest write StdoutDest to w.
func withStream(ctx context.Context, w io.Writer) context.Context {
	return context.WithValue(ctx, streamKey{}, w)
}

// writeDest writes an output file: dest itself, atomically, or for
// StdoutDest the stream in ctx, which cannot be taken back: a failed
// export leaves a truncated stream, as with buildx.
func writeDest(ctx context.Context, dest string, write func(w io.Writer) error) error {
	if dest != StdoutDest {
		return writeFileAtomic(ctx, dest, write)
	}
	w, _ := ctx.Value(streamKey{}).(io.Writer)
	if w == nil {
		return fmt.Errorf("writing to stdout (dest=%s): no stream given", StdoutDest)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := write(bw); err != nil {
		return fmt.Errorf("writing to stdout: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("writing to stdout: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing to stdout: %w", err)
	}
	return nil
}

// streamDest settles where an output without a file goes, as buildx:
// oci and tar without dest= write to stdout; local with dest=- writes its
// tree as a tar there (type=tar); an oci layout directory cannot be
// streamed. docker without dest= stays so: the caller loads it into a
// Docker engine (--load).
func streamDest(out *Output, tarValue string) error {
	switch {
	case out.Dest == "" && (out.Type == "oci" || out.Type == "tar"):
		out.Dest = StdoutDest
	case out.Dest == StdoutDest && out.Type == "local":
		out.Type = "tar"
	}
	if out.Dest == StdoutDest && out.Type == "oci" && tarValue != "" {
		if b, err := strconv.ParseBool(tarValue); err == nil && !b {
			return errors.New("tar=false writes a directory, which cannot go to stdout: give dest=DIR")
		}
	}
	return nil
}
