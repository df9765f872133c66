package copier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/kiln-build/kiln/rooted"
)

// Do performs op, reading sources under srcRoot and writing under dstRoot.
// Both are plain directories (the executor has already mounted overlays
// there); it runs in a sandbox child process as root. Both trees are
// untrusted and reached only through package rooted: every path inside
// them is resolved in the tree and opened one component at a time without
// following symlinks. It works on the calling goroutine only, so a caller
// that locked its thread into a private mount namespace sees every file
// operation happen there.
func Do(srcRoot, dstRoot string, op Op) error {
	return DoWith(srcRoot, dstRoot, op, Options{})
}

// DoWith is Do with options: with Workers, regular files are copied on
// several goroutines (see Options).
func DoWith(srcRoot, dstRoot string, op Op, opt Options) error {
	if srcRoot != "" {
		srcRoot = filepath.Clean(srcRoot)
	}
	dstRoot = filepath.Clean(dstRoot)
	droot, err := rooted.Open(dstRoot)
	if err != nil {
		return fmt.Errorf("opening the destination: %w", err)
	}
	defer droot.Close()
	switch op.Kind {
	case "mkdir":
		err = doMkdir(droot, op)
		if err != nil {
			err = fmt.Errorf("creating directory %q: %w", op.Dest, err)
		}
	case "copy", "add":
		err = doCopy(srcRoot, dstRoot, droot, op, opt)
	default:
		err = fmt.Errorf("unknown copy kind %q", op.Kind)
	}
	return inRootPaths(err, srcRoot, dstRoot)
}

// testHookBeforeCopy, when set, runs after the source is opened and
// before anything is read from it: tests change the source there.
var testHookBeforeCopy func()

// doMkdir is WORKDIR: BuildKit's FileOp mkdir with MakeParents, mode 0755
// and the active USER as owner of every directory it creates
// (dockerfile2llb dispatchWorkdir, solver/llbsolver/file mkdir).
func doMkdir(dst *rooted.Root, op Op) error {
	own, err := resolveOwner(dst, op.User)
	if err != nil {
		return fmt.Errorf("resolving user %q: %w", op.User, err)
	}
	rel, _, err := dst.Resolve(op.Dest, true)
	if err != nil {
		return err
	}
	d, err := mkdirIn(dst, rel, 0o755, own, nil)
	if err != nil {
		return err
	}
	return d.Close()
}

func doCopy(srcRoot, dstRoot string, droot *rooted.Root, op Op, opt Options) (err error) {
	mode, err := parseChmod(op.Chmod)
	if err != nil {
		return err
	}
	chown, err := resolveOwner(droot, op.Chown)
	if err != nil {
		return fmt.Errorf("resolving --chown %q: %w", op.Chown, err)
	}
	src, err := newSrcTree(srcRoot, op.Excludes)
	if err != nil {
		return err
	}
	defer src.Close()
	var v *verifier
	if op.Verify {
		v = &verifier{expect: op.Expect}
	}
	if testHookBeforeCopy != nil {
		testHookBeforeCopy()
	}
	verb := "copying"
	if op.Kind == "add" {
		verb = "adding"
	}
	// Opened before the pool, so closed after its last job.
	direct, err := openDirect(opt.Upper)
	if err != nil {
		return err
	}
	defer direct.close()
	pool := newFilePool(opt.Workers)
	defer func() {
		if perr := pool.close(); err == nil && perr != nil {
			err = perr
		}
	}()
	for _, s := range op.Sources {
		c := &copier{
			pool:      pool,
			src:       src,
			droot:     droot,
			chown:     chown,
			mode:      mode,
			fromStage: op.FromStage,
			topMeta:   op.TopMeta,
			unpack:    op.Kind == "add",
			verify:    v,
			direct:    direct,
		}
		base, err := c.selectSource(op.Selection, s)
		if err != nil {
			return fmt.Errorf("%s %q to %q: %w", verb, s, op.Dest, err)
		}
		if err := c.copySource(base, op.Dest); err != nil {
			var cc *ContextChangedError
			if errors.As(err, &cc) {
				return err
			}
			return fmt.Errorf("%s %q to %q: %w", verb, s, op.Dest, err)
		}
	}
	return v.done()
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
		c.links = map[fileID]firstCopy{}
		if c.unpack {
			// The archive is read by the extraction below: check it
			// against the key first, and check again as a plain copy when
			// it turns out not to be an archive.
			mark := 0
			if c.verify != nil {
				mark = c.verify.i
				if err := c.verifyFile(m); err != nil {
					return err
				}
			}
			ok, err := c.tryUnpack(m, dest)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			if c.verify != nil {
				c.verify.i = mark
			}
		}
		err := c.copyMatch(m, dest)
		// A later match or source may write the same names.
		if werr := c.pool.wait(); err == nil {
			err = werr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// verifyFile checks a named source that ADD may extract against the key,
// hashing its bytes when it is a regular file.
func (c *copier) verifyFile(srcPath string) error {
	srcRel, _, err := c.src.r.Resolve(srcPath, true)
	if err != nil {
		return c.notFound(srcPath, err)
	}
	fi, err := c.src.lstat(srcRel)
	if err != nil {
		return c.notFound(srcPath, err)
	}
	if !fi.Mode().IsRegular() {
		// Copied, not extracted: copyMatch checks it.
		return nil
	}
	d, name, err := c.src.r.Parent(srcRel)
	if err != nil {
		return err
	}
	defer d.Close()
	f, err := d.OpenRegular(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("reading %s: %w", srcRel, err)
	}
	return c.verify.check(srcRel, fi, hex.EncodeToString(h.Sum(nil)), "")
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
	ensureRel, _, err := c.droot.Resolve(ensure, true)
	if err != nil {
		return err
	}
	ed, err := mkdirIn(c.droot, ensureRel, c.mode.parentPerm(), c.chown, c.direct.note)
	if err != nil {
		return err
	}
	ed.Close()
	dstRel, dexists, err := c.droot.Resolve(destRaw, true)
	if err != nil {
		return err
	}

	srcRel, _, err := c.src.r.Resolve(srcPath, true)
	if err != nil {
		return c.notFound(srcPath, err)
	}
	fi, err := c.src.lstat(srcRel)
	if err != nil {
		return c.notFound(srcPath, err)
	}
	c.topRel = srcRel

	dstIsDir := false
	if dexists {
		dst, err := c.droot.Lstat(dstRel)
		if err != nil && !isNotExist(err) {
			return fmt.Errorf("checking destination: %w", err)
		}
		dexists = err == nil
		dstIsDir = dexists && dst.Mode&syscall.S_IFMT == syscall.S_IFDIR
	}
	if !fi.IsDir() && dstIsDir {
		dstRel = path.Join(dstRel, path.Base(cleanRooted(srcPath)))
	}
	parent := path.Dir(dstRel)
	if fi.IsDir() && !dexists {
		parent = dstRel
	}
	pd, err := mkdirIn(c.droot, parent, c.mode.parentPerm(), c.chown, c.direct.note)
	if err != nil {
		return err
	}
	defer pd.Close()
	st, err := c.topState(srcRel, fi)
	if err != nil {
		return err
	}

	// The source by its parent's handle (the root itself by its own).
	s := node{dir: c.src.r.Dir()}
	if srcRel != "/" {
		sd, sname, err := c.src.r.Parent(srcRel)
		if err != nil {
			return c.notFound(srcPath, err)
		}
		defer sd.Close()
		s = node{dir: sd, name: sname}
	}
	// The destination: its parent is made; dest itself may be the parent
	// (a directory copied to a new dest) or the root. The parent stays on
	// the mount even when the copy made it: dest's own name was looked up
	// there (Resolve), and the overlay may hold that answer (direct).
	dparent, dname := &lazyDir{d: pd}, path.Base(dstRel)
	if parent == dstRel {
		if dstRel == "/" {
			dname = ""
		} else {
			gp, name, err := c.droot.Parent(dstRel)
			if err != nil {
				return err
			}
			defer gp.Close()
			dparent, dname = &lazyDir{d: gp}, name
		}
	} else if dstRel == "/" {
		dname = ""
	}
	err = c.copyNode(s, fi, st, dparent, dname, true)
	// A job may use the handles closed on the way out.
	if werr := c.pool.wait(); err == nil {
		err = werr
	}
	return err
}

// selectSource compiles the selection of one source and returns the path
// to copy: for COPY --parents, the base before the pivot, after checking
// that a path without wildcards exists (BuildKit's RequiredPaths).
func (c *copier) selectSource(sel Selection, src string) (string, error) {
	base, pattern := src, ""
	if sel.Parents {
		base, pattern = SplitParents(src)
		if full := path.Join(base, pattern); !hasWildcard(full) {
			if err := c.requirePath(base, pattern); err != nil {
				return "", c.notFound(full, err)
			}
		}
	}
	var err error
	c.sel, err = sel.compile(pattern)
	return base, err
}

// requirePath checks that the copy of base with the --parents pattern
// (no wildcards) will include the path they name, as BuildKit's checksum
// checks RequiredPaths: against the paths its walk includes, named
// without following symlinks — so a symlinked directory anywhere on the
// path, before the pivot or after it, means "not found" (checked with
// buildkitd v0.34.2), while the last component may be a symlink.
func (c *copier) requirePath(base, pattern string) error {
	rel := "/"
	fi, err := c.src.lstat(rel)
	if err != nil {
		return err
	}
	for _, comp := range splitRooted(cleanRooted(path.Join(base, pattern))) {
		if !fi.IsDir() {
			return &fs.PathError{Op: "lstat", Path: path.Join(rel, comp), Err: fs.ErrNotExist}
		}
		rel = path.Join(rel, comp)
		if fi, err = c.src.lstat(rel); err != nil {
			return err
		}
	}
	return nil
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
	baseRel, _, err := c.src.r.Resolve(base, true)
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
	var walk func(dir *rooted.Dir, pattern []string) error
	walk = func(dir *rooted.Dir, pattern []string) error {
		names, err := dir.Names()
		if err != nil {
			return err
		}
		sort.Strings(names)
		for _, name := range names {
			if ok, _ := path.Match(pattern[0], name); !ok {
				continue
			}
			efi, err := c.src.lstatAt(dir, name)
			if err != nil {
				if isNotExist(err) {
					continue
				}
				return err
			}
			if len(pattern) == 1 {
				out = append(out, pathIn(dir, name))
				continue
			}
			if efi.IsDir() {
				sub, err := dir.OpenDir(name)
				if err != nil {
					return err
				}
				err = walk(sub, pattern[1:])
				sub.Close()
				if err != nil {
					return err
				}
			}
		}
		return nil
	}
	d, err := c.src.r.OpenDir(baseRel)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := walk(d, comps[first:]); err != nil {
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
