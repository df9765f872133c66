//go:build !linux

package provenance

// ReadGit is Linux-only, like package rooted it reads through; elsewhere
// the context's commit is not recorded.
func ReadGit(dir string) (*Git, error) { return nil, nil }
