// Package layer defines kiln's layer tar format, in both directions, once.
//
// On disk kiln keeps layers in overlay format: a deleted path is a whiteout
// (a character device 0:0 with the deleted name) and a directory that hides
// everything below it carries the xattr trusted.overlay.opaque=y. That is
// exactly what an overlayfs upper dir holds after a RUN step, and it lets
// unpacked base-image layers serve directly as overlay lowerdirs.
//
// In a tar stream the same facts use the OCI/Docker spelling: an empty
// regular file .wh.NAME for a whiteout and DIR/.wh..wh..opq for an opaque
// directory. WriteTar converts overlay format to tar, Unpack converts back.
//
// The Applier is kiln's one tar applier, with two sinks: a layer directory
// in overlay format (what Unpack builds for the store) and a flattened root
// filesystem (local and tar exports, ADD of an archive), which applies
// whiteouts and opaque markers by deleting. Both reach every path through
// package rooted, by descriptor, without following a symlink out of the
// root. The store (cache) and the executor share this package; it imports
// neither.
//
// In a user namespace (a rootless build) overlay keeps opaque directories
// in user.overlay.opaque instead, and both directions use that.
package layer

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"
)

const (
	// WhiteoutPrefix marks a deleted path in a layer tar: .wh.NAME deletes
	// NAME from the layers below.
	WhiteoutPrefix = ".wh."
	// OpaqueMarker is the tar entry DIR/.wh..wh..opq that makes DIR opaque.
	OpaqueMarker = WhiteoutPrefix + WhiteoutPrefix + ".opq"
	// OpaqueXattr is set to "y" on an opaque directory in overlay format.
	OpaqueXattr = "trusted.overlay.opaque"
	// UserOpaqueXattr replaces OpaqueXattr when kiln runs in a user
	// namespace (a rootless build): overlay is mounted with userxattr
	// there, as trusted.* xattrs need real root.
	UserOpaqueXattr = "user.overlay.opaque"

	paxXattr = "SCHILY.xattr."
)

// keepXattr says which extended attributes are part of a layer. File
// capabilities and user.* are image content; trusted.overlay.* (and its
// rootless spelling user.overlay.*) are overlayfs bookkeeping that would
// confuse the next mount if carried across; security.selinux and ACLs are
// host policy, which BuildKit's and Docker's exporters leave out as well.
func keepXattr(name string) bool {
	switch {
	case name == "security.capability":
		return true
	case strings.HasPrefix(name, "user.overlay."):
		return false
	case strings.HasPrefix(name, "user."):
		return true
	}
	return false
}

// TarOptions change how WriteTarWith writes a layer.
type TarOptions struct {
	// ClampMtime, when set, is the latest modification time any entry
	// gets: a later one is written as ClampMtime (only in the tar; the
	// files on disk keep theirs). This is SOURCE_DATE_EPOCH's rule for
	// the layers a build creates, which makes a layer's bytes independent
	// of when its files were written.
	ClampMtime *time.Time
	// Entry, when set, is called for every entry below the directory as
	// WriteTarWith reaches it, in the tar's order, sockets and whiteouts
	// included (by their names on disk): what a listing of the tree
	// needs, without a second walk. An error stops the tar.
	Entry func(TreeEntry) error
}

// TreeEntry is one entry of a directory WriteTarWith walks, as lstat
// found it.
type TreeEntry struct {
	Path     string      // relative to the directory, slash-separated
	Mode     fs.FileMode // type and permission bits, as os.Lstat spells them
	UID, GID uint32
	Size     int64  // st_size
	Rdev     uint64 // device number (0:0 for a whiteout)
	Link     string // a symlink's target
}

// EscapeError reports a tar entry or hardlink target that would resolve
// outside the directory being unpacked into.
type EscapeError struct {
	Name   string // as written in the tar
	Reason string
}

func (e *EscapeError) Error() string {
	return fmt.Sprintf("layer entry %q escapes the root: %s", e.Name, e.Reason)
}

// bufPool holds copy buffers so that streaming thousands of files does not
// allocate a fresh buffer per file (io.Copy would, through os.File.WriteTo
// and ReadFrom fallbacks).
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 128<<10)
	return &b
}}

// copyBuffer copies exactly n bytes (or up to EOF when n < 0) from src to
// dst through buf, checking ctx between chunks so that cancelling a build
// does not wait for a multi-gigabyte file. It reads and writes by hand
// rather than through io.CopyBuffer, whose WriterTo/ReaderFrom shortcuts on
// os.File would ignore buf and allocate per call.
func copyBuffer(ctx context.Context, dst io.Writer, src io.Reader, n int64, buf []byte) (int64, error) {
	var written int64
	for n < 0 || written < n {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		chunk := buf
		if n >= 0 && int64(len(chunk)) > n-written {
			chunk = chunk[:n-written]
		}
		nr, rerr := src.Read(chunk)
		if nr > 0 {
			nw, werr := dst.Write(chunk[:nr])
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			if nw != nr {
				return written, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return written, rerr
		}
	}
	return written, nil
}
