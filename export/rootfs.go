package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Local writes img's flattened root filesystem into dir, like buildx
// -o type=local,dest=DIR: whiteouts and opaque directories applied, owners
// (when running as root), modes, symlinks, hardlinks, xattrs and mtimes
// kept. No layer entry can create or change anything outside dir: names
// climbing out with ".." are contained ("../x" is "/x"), symlinks met on
// the way are followed as if dir were "/", and every file is reached by
// descriptor, one component at a time, never through a symlink.
//
// The tree is built in a temporary sibling of dir first, so a failed export
// leaves dir as it was. A missing dir is then renamed into place; an
// existing one receives the tree entry by entry, replacing what is in the
// way and keeping unrelated files, as BuildKit's local exporter does.
func Local(ctx context.Context, img v1.Image, dir string) (err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolving output directory %s: %w", dir, err)
	}
	if abs == "/" {
		return errors.New("writing root filesystem: refusing to write over /")
	}
	exists := false
	switch fi, err := os.Stat(abs); {
	case err == nil && !fi.IsDir():
		return fmt.Errorf("writing root filesystem to %s: not a directory", dir)
	case err == nil:
		exists = true
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("writing root filesystem to %s: %w", dir, err)
	}
	parent := filepath.Dir(abs)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("creating parent of %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(abs)+".kiln-*")
	if err != nil {
		return fmt.Errorf("creating temporary directory for %s: %w", dir, err)
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = fmt.Errorf("removing temporary directory %s: %w", tmp, rerr)
		}
	}()

	f, err := flatten(ctx, img, tmp, true)
	if err != nil {
		return fmt.Errorf("writing root filesystem to %s: %w", dir, err)
	}
	defer f.close()
	if !exists {
		// MkdirTemp made it 0700; the output is an ordinary directory.
		if err := os.Chmod(tmp, 0o755); err != nil {
			return fmt.Errorf("setting mode of %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, abs); err != nil {
			return fmt.Errorf("moving root filesystem into %s: %w", dir, err)
		}
	} else if err := f.moveInto(ctx, abs); err != nil {
		return fmt.Errorf("moving root filesystem into %s: %w", dir, err)
	}
	if err := f.finish(abs); err != nil {
		return fmt.Errorf("writing root filesystem to %s: %w", dir, err)
	}
	return nil
}

// RootfsTar writes img's flattened root filesystem as one tar file, like
// buildx -o type=tar,dest=FILE: entries sorted by name, every directory
// before its contents, a hardlink after the file it links to, owners and
// modes from the layers whatever user kiln runs as.
func RootfsTar(ctx context.Context, img v1.Image, dest string) (err error) {
	abs, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("resolving output file %s: %w", dest, err)
	}
	parent := filepath.Dir(abs)
	if dest == StdoutDest {
		// A stream has no disk of its own for the scratch tree.
		abs, parent = StdoutDest, os.TempDir()
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("creating parent of %s: %w", dest, err)
	}
	// The layers are applied to a scratch tree next to dest (the disk the
	// user chose for the output, not a possibly small /tmp) because only a
	// whole flattened tree says which file of which layer survives.
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(abs)+".kiln-rootfs-*")
	if err != nil {
		return fmt.Errorf("creating temporary directory for %s: %w", dest, err)
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = fmt.Errorf("removing temporary directory %s: %w", tmp, rerr)
		}
	}()
	f, err := flatten(ctx, img, tmp, false)
	if err != nil {
		return fmt.Errorf("flattening root filesystem for %s: %w", dest, err)
	}
	defer f.close()
	return writeDest(ctx, abs, func(w io.Writer) error { return f.writeTar(ctx, w) })
}

// xattrPrefix starts the PAX records that carry extended attributes.
const xattrPrefix = "SCHILY.xattr."
