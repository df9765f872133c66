//go:build !linux

package export

// lockFile is a no-op off Linux: kiln builds only on Linux, and the
// exporter is compiled elsewhere only for its pure-Go parts and tests.
func lockFile(string) (func(), error) { return func() {}, nil }
