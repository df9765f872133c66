//go:build !linux

package emulate

import "errors"

// binfmt_misc is Linux's.
func mountBinfmt() error {
	return errors.New("binfmt_misc handlers exist only on Linux")
}
