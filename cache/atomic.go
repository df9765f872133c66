package cache

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// syncFile flushes f to disk. It is a variable so that tests can watch the
// order of syncs and renames, which no crash-free test can observe.
var syncFile = (*os.File).Sync

// writeAtomic is how every small file of the store (step, image and
// variant records, a layer's info.json and contents list) is written: the
// data goes to a temp file in ROOT/tmp (same filesystem), which is synced
// before it is renamed onto path, and the rename is made durable by syncing
// path's directory. A reader sees the old content or the new one, and after
// a crash one of them is there, complete — never an empty or partial file,
// which is what a rename of an unsynced file can leave on ext4 or xfs.
func (s *Store) writeAtomic(path string, data []byte) error {
	return writeReplacing(s.tmp(), path, data, true)
}

// writeNew creates path with data, for a file in a directory nobody sees
// yet (a layer's staging directory, renamed into place once complete): no
// temp file and rename are needed there. Mode 0644 whatever the umask, as
// writeReplacing's files.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err = f.Chmod(0o644); err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeReplacing writes data to a temp file in tmpDir (on path's
// filesystem) and renames it onto path; with sync, the file is synced
// before the rename and path's directory after it.
func writeReplacing(tmpDir, path string, data []byte, sync bool) error {
	f, err := os.CreateTemp(tmpDir, "write-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil && sync {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// CreateTemp makes 0600; records are readable like the rest
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if !sync {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename into (or out of) dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syncFile(f); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// digestFile is the sha256 and size of a file.
func digestFile(path string) (v1.Hash, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return sum(h), n, nil
}
