//go:build !linux

package copier

import "errors"

// Do performs op; copying needs Linux (ownership, xattrs, device nodes and
// the executor's mount namespaces), so elsewhere it only reports that.
func Do(srcRoot, dstRoot string, op Op) error {
	return errors.New("copier: COPY, ADD and WORKDIR need Linux")
}
