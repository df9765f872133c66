package copier

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Do performs op, reading sources under srcRoot and writing under dstRoot.
// Both are plain directories (the executor has already mounted overlays
// there); it runs in a sandbox child process as root. It works on the
// calling goroutine only, so a caller that locked its thread into a private
// mount namespace sees every file operation happen there.
func Do(srcRoot, dstRoot string, op Op) error {
	if srcRoot != "" {
		srcRoot = filepath.Clean(srcRoot)
	}
	dstRoot = filepath.Clean(dstRoot)
	dst := dirTree(dstRoot)
	var err error
	switch op.Kind {
	case "mkdir":
		err = doMkdir(dst, op)
		if err != nil {
			err = fmt.Errorf("creating directory %q: %w", op.Dest, err)
		}
	case "copy", "add":
		err = doCopy(srcRoot, dst, op)
	default:
		err = fmt.Errorf("unknown copy kind %q", op.Kind)
	}
	return inRootPaths(err, srcRoot, dstRoot)
}

// doMkdir is WORKDIR: BuildKit's FileOp mkdir with MakeParents, mode 0755
// and the active USER as owner of every directory it creates
// (dockerfile2llb dispatchWorkdir, solver/llbsolver/file mkdir).
func doMkdir(dst dirTree, op Op) error {
	own, err := resolveOwner(dst, op.User)
	if err != nil {
		return fmt.Errorf("resolving user %q: %w", op.User, err)
	}
	rel, err := resolveIn(dst, op.Dest, true)
	if err != nil {
		return err
	}
	return mkdirAll(dst, rel, 0o755, own)
}

func doCopy(srcRoot string, dst dirTree, op Op) error {
	mode, err := parseChmod(op.Chmod)
	if err != nil {
		return err
	}
	chown, err := resolveOwner(dst, op.Chown)
	if err != nil {
		return fmt.Errorf("resolving --chown %q: %w", op.Chown, err)
	}
	src, err := newSrcTree(srcRoot, op.Excludes)
	if err != nil {
		return err
	}
	verb := "copying"
	if op.Kind == "add" {
		verb = "adding"
	}
	for _, s := range op.Sources {
		c := &copier{
			src:       src,
			dst:       dst,
			chown:     chown,
			mode:      mode,
			fromStage: op.FromStage,
			unpack:    op.Kind == "add",
		}
		if err := c.copySource(s, op.Dest); err != nil {
			return fmt.Errorf("%s %q to %q: %w", verb, s, op.Dest, err)
		}
	}
	return nil
}

// copySource is one BuildKit copy action: it expands the wildcards of src
// and copies each match to dest (fsutil copy.Copy, or unpack for ADD).
func (c *copier) copySource(src, dest string) error {
	matches, err := c.expand(src)
	if err != nil {
		return err
	}
	for _, m := range matches {
		// BuildKit's docopy runs one fsutil copy per wildcard match, so
		// hardlinks are kept within a match (a copied directory), never
		// between matches or sources (checked against buildkitd v0.34.2).
		c.links = map[fileID]string{}
		if c.unpack {
			ok, err := c.tryUnpack(m, dest)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
		}
		if err := c.copyMatch(m, dest); err != nil {
			return err
		}
	}
	return nil
}

// copyMatch copies one resolved source path to dest with fsutil's rules:
//   - the directories leading to dest are created (for a dest ending in
//     "/" or "/.", dest itself), with the --chmod octal mode or 0755 and
//     the --chown owner;
//   - a directory's contents go into dest, which is created if missing; an
//     existing dest directory keeps its mode and owner and takes the
//     source directory's timestamps;
//   - a file goes into dest when dest is an existing directory, named like
//     the source as written (a followed symlink keeps the link's name),
//     and is dest itself otherwise.
func (c *copier) copyMatch(srcPath, dest string) error {
	destRaw := cleanKeepSlash(dest)
	ensure := destRaw
	if d, f := path.Split(destRaw); f != "" && f != "." {
		ensure = d
	}
	ensureRel, err := resolveIn(c.dst, ensure, true)
	if err != nil {
		return err
	}
	if err := mkdirAll(c.dst, ensureRel, c.mode.parentPerm(), c.chown); err != nil {
		return err
	}
	dstRel, err := resolveIn(c.dst, destRaw, true)
	if err != nil {
		return err
	}

	srcRel, err := resolveIn(c.src, srcPath, true)
	if err != nil {
		return c.notFound(srcPath, err)
	}
	fi, err := c.src.lstat(srcRel)
	if err != nil {
		return c.notFound(srcPath, err)
	}

	dfi, err := os.Stat(c.dst.host(dstRel))
	if err != nil && !isNotExist(err) {
		return fmt.Errorf("checking destination: %w", err)
	}
	if err != nil {
		dfi = nil
	}
	if !fi.IsDir() && dfi != nil && dfi.IsDir() {
		dstRel = path.Join(dstRel, path.Base(cleanRooted(srcPath)))
	}
	parent := path.Dir(dstRel)
	if fi.IsDir() && dfi == nil {
		parent = dstRel
	}
	if err := mkdirAll(c.dst, parent, c.mode.parentPerm(), c.chown); err != nil {
		return err
	}
	st, err := c.topState(srcRel, fi)
	if err != nil {
		return err
	}
	return c.copyEntry(srcRel, fi, st, dstRel, true)
}

// notFound turns a failed source lookup into a NotFoundError when the
// source is missing (or excluded), keeping other errors as they are.
func (c *copier) notFound(srcPath string, err error) error {
	if !isNotExist(err) {
		return err
	}
	p := strings.TrimPrefix(cleanRooted(srcPath), "/")
	if p == "" {
		p = "."
	}
	nf := &NotFoundError{Path: p}
	var ex *excludedError
	if errors.As(err, &ex) {
		nf.ExcludedBy = ex.pattern
	}
	return nf
}

// expand resolves the wildcards of src like fsutil's ResolveWildcards: the
// path up to the first component with a wildcard is resolved (symlinks
// followed), the rest is matched with path.Match against entries below it,
// in lexical order, without descending into symlinked directories. No
// match is not an error (BuildKit's AllowEmptyWildcard), but a missing
// base directory is. A source without wildcards is returned as is.
func (c *copier) expand(src string) ([]string, error) {
	clean := cleanRooted(src)
	comps := splitRooted(clean)
	first := -1
	for i, comp := range comps {
		if hasWildcard(comp) {
			first = i
			break
		}
	}
	if first < 0 {
		return []string{clean}, nil
	}
	base := "/" + strings.Join(comps[:first], "/")
	baseRel, err := resolveIn(c.src, base, true)
	if err != nil {
		return nil, c.notFound(base, err)
	}
	fi, err := c.src.lstat(baseRel)
	if err != nil {
		return nil, c.notFound(base, err)
	}
	var out []string
	if !fi.IsDir() {
		return nil, nil
	}
	var walk func(dir string, pattern []string) error
	walk = func(dir string, pattern []string) error {
		names, err := sortedNames(c.src.host(dir))
		if err != nil {
			return err
		}
		for _, name := range names {
			if ok, _ := path.Match(pattern[0], name); !ok {
				continue
			}
			rel := path.Join(dir, name)
			efi, err := c.src.lstat(rel)
			if err != nil {
				if isNotExist(err) {
					continue
				}
				return err
			}
			if len(pattern) == 1 {
				out = append(out, rel)
				continue
			}
			if efi.IsDir() {
				if err := walk(rel, pattern[1:]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(baseRel, comps[first:]); err != nil {
		return nil, err
	}
	return out, nil
}

// inRootPaths makes err speak of paths inside the roots ("/app/x") rather
// than the sandbox's mount points: the *fs.PathError and *os.LinkError
// values in its chain are rewritten for callers that inspect them, and the
// message, already formatted by the wrapping along the way, is rewritten
// the same way.
func inRootPaths(err error, roots ...string) error {
	if err == nil {
		return nil
	}
	sort.Slice(roots, func(i, j int) bool { return len(roots[i]) > len(roots[j]) })
	var pairs []string
	for _, r := range roots {
		if r != "" && r != "/" {
			pairs = append(pairs, r+"/", "/", r, "/")
		}
	}
	rep := strings.NewReplacer(pairs...)
	msg := rep.Replace(err.Error())
	var walk func(e error)
	walk = func(e error) {
		for e != nil {
			switch v := e.(type) {
			case *fs.PathError:
				v.Path = rep.Replace(v.Path)
			case *os.LinkError:
				v.Old, v.New = rep.Replace(v.Old), rep.Replace(v.New)
			case interface{ Unwrap() []error }:
				for _, x := range v.Unwrap() {
					walk(x)
				}
				return
			}
			e = errors.Unwrap(e)
		}
	}
	walk(err)
	return &inRootError{msg: msg, err: err}
}

// inRootError carries the rewritten message of an error chain.
type inRootError struct {
	msg string
	err error
}

func (e *inRootError) Error() string { return e.msg }

func (e *inRootError) Unwrap() error { return e.err }
