package cache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/layer"
)

// Every layer directory holds, beside fs/, a list of what fs/ held when it
// was published:
//
//	ROOT/layers/<id>/contents   one line per entry below fs/, in walk order:
//	                            MODE UID:GID SIZE RDEV "PATH" ["LINK TARGET"]
//
// It is what kiln verify checks a layer against: paths, types, permission
// bits, owners, sizes and device numbers (whiteouts are 0:0 devices) — one
// lstat per entry, about as cheap as the walk that wrote it (10,000 files:
// ~50 ms warm). File contents are not hashed: that would cost a read of
// every byte at each check; a damaged file with its size intact is found by
// re-digesting the blob instead, which holds the same bytes.

const contentsFile = "contents"

// listContentsWalk walks an unpacked layer's fs/ directory and writes its
// contents list by path: what listContents writes where there is no
// faster walk (and what tests compare it with).
func listContentsWalk(fsDir string) ([]byte, error) {
	var buf bytes.Buffer
	err := filepath.WalkDir(fsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == fsDir {
			return nil
		}
		line, err := contentsLine(fsDir, p)
		if err != nil {
			return err
		}
		buf.WriteString(line)
		buf.WriteByte('\n')
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", fsDir, err)
	}
	return buf.Bytes(), nil
}

func contentsLine(fsDir, p string) (string, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(fsDir, p)
	if err != nil {
		return "", err
	}
	uid, gid, rdev := statOwner(fi)
	size := int64(0)
	if fi.Mode().IsRegular() {
		size = fi.Size()
	}
	line := fmt.Sprintf("%o %d:%d %d %d %s", uint32(fi.Mode()), uid, gid, size, rdev, strconv.Quote(filepath.ToSlash(rel)))
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		line += " " + strconv.Quote(target)
	}
	return line, nil
}

// appendContentsLine appends the contents line of an entry the tar walk
// reached: the line contentsLine makes of the same lstat.
func appendContentsLine(b []byte, e layer.TreeEntry) []byte {
	size := int64(0)
	if e.Mode.IsRegular() {
		size = e.Size
	}
	b = strconv.AppendUint(b, uint64(uint32(e.Mode)), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(e.UID), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(e.GID), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, size, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, e.Rdev, 10)
	b = append(b, ' ')
	b = strconv.AppendQuote(b, e.Path)
	if e.Mode&fs.ModeSymlink != 0 {
		b = append(b, ' ')
		b = strconv.AppendQuote(b, e.Link)
	}
	return append(b, '\n')
}

// errNoContents means a layer was published by a kiln that wrote no
// contents list: it cannot be checked.
var errNoContents = errors.New("no contents list (stored by an older kiln)")

// checkContents compares a layer's fs/ with its contents list and returns
// what differs (at most a few lines of it), or nothing.
func checkContents(layerDir string) ([]string, error) {
	want, err := os.ReadFile(filepath.Join(layerDir, contentsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoContents
	}
	if err != nil {
		return nil, err
	}
	fsDir := filepath.Join(layerDir, "fs")
	if fi, err := os.Lstat(fsDir); err != nil || !fi.IsDir() {
		return []string{"fs/ is missing"}, nil
	}
	wantLines := map[string]string{} // path → line
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(want))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p := contentsPath(line)
		wantLines[p] = line
		order = append(order, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(layerDir, contentsFile), err)
	}
	var diffs []string
	const maxDiffs = 5
	seen := map[string]bool{}
	err = filepath.WalkDir(fsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", p, err))
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p == fsDir {
			return nil
		}
		got, err := contentsLine(fsDir, p)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", p, err))
			return nil
		}
		path := contentsPath(got)
		seen[path] = true
		w, ok := wantLines[path]
		switch {
		case !ok:
			diffs = append(diffs, "unexpected "+path)
		case w != got:
			diffs = append(diffs, fmt.Sprintf("%s changed: %s, want %s", path, describe(got), describe(w)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range order {
		if !seen[p] {
			diffs = append(diffs, "missing "+p)
		}
	}
	if len(diffs) > maxDiffs {
		diffs = append(diffs[:maxDiffs], fmt.Sprintf("and %d more differences", len(diffs)-maxDiffs))
	}
	return diffs, nil
}

// contentsPath is the (unquoted) path of a contents line.
func contentsPath(line string) string {
	f := strings.SplitN(line, " ", 5)
	if len(f) < 5 {
		return line
	}
	rest := f[4]
	if q, err := strconv.QuotedPrefix(rest); err == nil {
		if p, err := strconv.Unquote(q); err == nil {
			return "/" + p
		}
	}
	return rest
}

// describe is the attributes part of a contents line, for messages.
func describe(line string) string {
	f := strings.SplitN(line, " ", 5)
	if len(f) < 5 {
		return line
	}
	mode, _ := strconv.ParseUint(f[0], 8, 32)
	s := fmt.Sprintf("%v owner %s size %s", fs.FileMode(mode), f[1], f[2])
	if q, err := strconv.QuotedPrefix(f[4]); err == nil && len(q) < len(f[4]) {
		s += " ->" + f[4][len(q):]
	}
	return s
}
