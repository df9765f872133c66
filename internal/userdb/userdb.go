// Package userdb reads an image's /etc/passwd and /etc/group: the one
// place both the copier (COPY --chown, WORKDIR owners) and the RUN init
// (USER) get them from. The files come from an untrusted image, so they
// are read through rooted: symlinks stay inside the image, only a regular
// file is read (a FIFO planted there must not hang the build), and at most
// MaxFileBytes of it.
package userdb

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"

	"github.com/kiln-build/kiln/rooted"
)

// MaxFileBytes bounds what is read of /etc/passwd and /etc/group, as
// BuildKit bounds it: a hostile image must not make kiln allocate without
// limit.
const MaxFileBytes = 10 << 20

// ReadFile reads name (an in-image path such as "/etc/passwd") of root. A
// missing file is no data and no error: BuildKit treats it as empty.
func ReadFile(root *rooted.Root, name string) ([]byte, error) {
	b, err := root.ReadFile(name, MaxFileBytes)
	if err == nil {
		return b, nil
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	return nil, fmt.Errorf("%w; the image's %s must be a regular file of at most %d MiB: fix the image, or use numeric ids", err, name, MaxFileBytes>>20)
}

// Parse splits a passwd- or group-format file into lines of exactly n
// fields (missing trailing fields are empty, extra colons stay in the
// last). Blank lines are skipped, and lines starting with "#" when
// skipComments is set.
func Parse(data []byte, n int, skipComments bool) [][]string {
	var out [][]string
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || (skipComments && line[0] == '#') {
			continue
		}
		fields := strings.SplitN(string(line), ":", n)
		for len(fields) < n {
			fields = append(fields, "")
		}
		out = append(out, fields)
	}
	return out
}
