package export

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// writeFileAtomic writes dest through a temporary file in the same
// directory and renames it into place, so a failed or interrupted export
// leaves either the previous file or nothing, never half an archive.
func writeFileAtomic(ctx context.Context, dest string, write func(w io.Writer) error) (err error) {
	if dest == "" || dest == "-" {
		return fmt.Errorf("writing %q: not a file name", dest)
	}
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		return fmt.Errorf("writing %s: is a directory", dest)
	}
	dir := filepath.Dir(dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating directory for %s: %w", dest, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(dest)+".kiln-*")
	if err != nil {
		return fmt.Errorf("creating temporary file for %s: %w", dest, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := &fileWriter{Writer: bufio.NewWriterSize(f, 1<<20), f: f}
	if err := write(bw); err != nil {
		return fmt.Errorf("writing %s: %w", dest, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("writing %s: %w", dest, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", dest, err)
	}
	// CreateTemp makes the file 0600; an exported archive is an ordinary
	// file that other users and tools should be able to read.
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("setting mode of %s: %w", dest, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", dest, err)
	}
	// An old file of some size goes aside before the new one takes its
	// name, and is removed after: renaming onto an existing file makes
	// ext4 (auto_da_alloc) start writing the new file's data out first, up
	// to a second for a 500 MB archive, still milliseconds for one of a
	// megabyte. Between the two renames the name is missing for an
	// instant; the old file is still whole under its other name.
	aside := ""
	if fi, err := os.Lstat(dest); err == nil && fi.Mode().IsRegular() && fi.Size() >= 256<<10 {
		aside = f.Name() + ".old"
		if err := os.Rename(dest, aside); err != nil {
			aside = "" // replace it in one rename, as before
		}
	}
	if err := os.Rename(f.Name(), dest); err != nil {
		if aside != "" {
			os.Rename(aside, dest)
		}
		return fmt.Errorf("moving %s into place: %w", dest, err)
	}
	if aside != "" {
		// Freeing a large file's blocks takes a while (0.4 s for 500 MB
		// here): not on the build's path. kiln removes it when the
		// command is done (TakeReplaced).
		replacedMu.Lock()
		replaced = append(replaced, aside)
		replacedMu.Unlock()
	}
	return nil
}

var (
	replacedMu sync.Mutex
	replaced   []string
)

// TakeReplaced returns the files that exports replaced and moved aside,
// for the caller to remove once the command is done; each is returned
// once.
func TakeReplaced() []string {
	replacedMu.Lock()
	defer replacedMu.Unlock()
	out := replaced
	replaced = nil
	return out
}

// IsReplacedName reports whether path has the name of a file an export
// moved aside (".NAME.kiln-N.old"), which is all a detached kiln removes.
func IsReplacedName(path string) bool {
	base := filepath.Base(path)
	return strings.HasPrefix(base, ".") && strings.Contains(base, ".kiln-") && strings.HasSuffix(base, ".old")
}

// fileWriter is the buffered writer of a file being written, which a blob
// copy may bypass (after a Flush) to copy in the kernel.
type fileWriter struct {
	*bufio.Writer
	f *os.File
}
