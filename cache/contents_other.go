//go:build !linux

package cache

// listContents walks an unpacked layer's fs/ directory and writes its
// contents list.
func listContents(fsDir string) ([]byte, error) { return listContentsWalk(fsDir) }
