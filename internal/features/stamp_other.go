//go:build !linux

package features

import "errors"

// stamp: there is no boot id to key the cache with.
func stamp() (string, error) { return "", errors.ErrUnsupported }
