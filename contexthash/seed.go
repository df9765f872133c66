package contexthash

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/kiln-build/kiln/rooted"
)

// FileSum is the digest of a regular file's bytes, computed by whoever
// wrote the file (the unpacking of a context archive sees every byte
// once), so that hashing the context need not read it again.
type FileSum struct {
	Size int64  // bytes hashed
	Sum  string // hex SHA-256 of the bytes, as Checksum computes it
}

// memoFile is where the state of contextDir lives under memoDir.
func memoFile(memoDir, contextDir string) (string, error) {
	abs, err := filepath.Abs(contextDir)
	if err != nil {
		return "", err
	}
	id := sha256.Sum256([]byte(abs))
	return filepath.Join(memoDir, hex.EncodeToString(id[:16])+".memo"), nil
}

// Seed writes the state Open reads for contextDir from sums, keyed by
// rooted path ("/a/b"): the next Checksum over contextDir reads none of
// those files, only lstats them as it always does. Each path is looked
// up now, from contextDir down, without following any symlink, and its
// stat (size, times, inode) becomes the key the digest is valid for: a
// path that is not a regular file of the size hashed is left out, and a
// file changed afterwards no longer matches, so either is read when it
// is hashed. The caller must have finished writing the files (their
// owner, mode and times set, hardlinks made: each changes the ctime).
func Seed(memoDir, contextDir string, sums map[string]FileSum) error {
	memoPath, err := memoFile(memoDir, contextDir)
	if err != nil {
		return fmt.Errorf("seeding the context hash state of %s: %w", contextDir, err)
	}
	root, err := rooted.Open(contextDir)
	if err != nil {
		return fmt.Errorf("seeding the context hash state of %s: %w", contextDir, err)
	}
	defer root.Close()
	paths := make([]string, 0, len(sums))
	for p := range sums {
		paths = append(paths, p)
	}
	// By directory, so that each is opened once.
	sort.Slice(paths, func(i, j int) bool {
		di, dj := path.Dir(paths[i]), path.Dir(paths[j])
		if di != dj {
			return di < dj
		}
		return paths[i] < paths[j]
	})
	memo := make(map[string]memoEntry, len(paths))
	var dir *rooted.Dir
	dirPath := ""
	defer func() {
		if dir != nil {
			dir.Close()
		}
	}()
	for _, p := range paths {
		if p != rooted.Clean(p) || p == "/" {
			continue
		}
		if parent := path.Dir(p); parent != dirPath {
			if dir != nil {
				dir.Close()
				dir = nil
			}
			dirPath = parent
			// every component a real directory: a symlink is an error
			if dir, err = root.OpenDir(parent); err != nil {
				dir = nil
				continue
			}
		}
		if dir == nil {
			continue
		}
		st, err := dir.Lstat(path.Base(p))
		s := sums[p]
		if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Size != s.Size || len(s.Sum) != 2*sha256.Size {
			continue
		}
		memo[p] = memoEntry{Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino, Sum: s.Sum}
	}
	if err := writeMemo(memoPath, memo); err != nil {
		return fmt.Errorf("seeding the context hash state of %s: %w", contextDir, err)
	}
	return nil
}

// Forget removes the state kept for contextDir: a context that is about
// to be deleted (kiln serve's unpacked contexts) leaves none behind.
func Forget(memoDir, contextDir string) {
	if p, err := memoFile(memoDir, contextDir); err == nil {
		os.Remove(p)
	}
}
