package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/layer"
	"github.com/kiln-build/kiln/rooted"
)

// Context is a build context fetched from somewhere that is not a local
// directory.
type Context struct {
	// Dir is the context's root directory on the host.
	Dir string
	// Dockerfile, when the source was a single file rather than an
	// archive or a repository (`docker build - < Dockerfile`, a URL
	// serving a Dockerfile), is the host path of that file; it lies
	// outside Dir, which is then empty.
	Dockerfile string
}

// IsRemoteContext reports whether ref names a build context FetchContext
// fetches: a git repository or an http(s) URL.
func IsRemoteContext(ref string) bool { return IsGit(ref) || IsHTTP(ref) }

// FetchContext fetches the build context ref names into dir (which must
// not exist, or be empty; the caller removes it afterwards), as BuildKit
// does for `docker build URL` and `--build-context NAME=URL`:
//   - a git URL (https://host/repo.git#ref:subdir, git@host:repo.git, …):
//     the checkout of that ref, its subdir as the root (.git removed unless
//     ?keep-git-dir=true);
//   - another http(s) URL: the download, unpacked if it is a tar (plain,
//     gzip, bzip2, xz or zstd), else taken as a lone Dockerfile.
//
// opts say how git reaches a git remote (WithSSHAgents).
func FetchContext(ctx context.Context, ref, dir string, opts ...GitOption) (Context, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Context{}, fmt.Errorf("creating the context directory: %w", err)
	}
	if g, ok, err := ParseGit(ref); ok {
		if err != nil {
			return Context{}, err
		}
		res, err := ResolveGit(ctx, g, "", opts...)
		if err != nil {
			return Context{}, err
		}
		checkout := filepath.Join(dir, "checkout")
		if err := Git(ctx, g, res, checkout, g.KeepGitDir != nil && *g.KeepGitDir, opts...); err != nil {
			return Context{}, err
		}
		root, err := SubdirPath(checkout, g.Subdir)
		if err != nil {
			return Context{}, fmt.Errorf("build context %s: %w", ref, err)
		}
		return Context{Dir: root}, nil
	}
	if !IsHTTP(ref) {
		return Context{}, fmt.Errorf("build context %q: not a git or http(s) URL", ref)
	}
	dl := filepath.Join(dir, "download")
	if err := os.Mkdir(dl, 0o700); err != nil {
		return Context{}, fmt.Errorf("creating the download directory: %w", err)
	}
	f, err := HTTP(ctx, ref, dl, HTTPOptions{})
	if err != nil {
		return Context{}, err
	}
	r, err := os.Open(f.Path)
	if err != nil {
		return Context{}, err
	}
	defer r.Close()
	out := filepath.Join(dir, "context")
	isTar, err := ReadContextTar(ctx, r, out)
	if err != nil {
		return Context{}, fmt.Errorf("build context %s: %w", Redact(ref), err)
	}
	if isTar {
		os.Remove(f.Path)
		return Context{Dir: out}, nil
	}
	return Context{Dir: out, Dockerfile: f.Path}, nil
}

// ReadStdinContext reads `docker build -`'s stdin into dir: a tar
// (plain or compressed) becomes the context; anything else is the
// Dockerfile, with an empty context.
func ReadStdinContext(ctx context.Context, r io.Reader, dir string) (Context, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Context{}, fmt.Errorf("creating the context directory: %w", err)
	}
	out := filepath.Join(dir, "context")
	br := bufio.NewReaderSize(r, 64<<10)
	isTar, err := ReadContextTar(ctx, br, out)
	if err != nil {
		return Context{}, fmt.Errorf("reading the build context from stdin: %w", err)
	}
	if isTar {
		return Context{Dir: out}, nil
	}
	// ReadContextTar consumed nothing it did not hand back: br still
	// holds the whole input when it was no tar.
	df := filepath.Join(dir, "Dockerfile")
	w, err := os.OpenFile(df, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Context{}, err
	}
	_, err = io.Copy(w, br)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Context{}, fmt.Errorf("reading the Dockerfile from stdin: %w", err)
	}
	return Context{Dir: out, Dockerfile: df}, nil
}

// ReadContextTar creates the directory out and, when r starts with a tar
// archive (plain, gzip, bzip2, xz or zstd), unpacks it there through
// package layer's applier: entries that name "../" or lead through a
// symlink stay inside out. It reports false, having consumed none of r
// when r is a *bufio.Reader, when r holds no tar.
func ReadContextTar(ctx context.Context, r io.Reader, out string) (bool, error) {
	return ReadContextTarChecked(ctx, r, out, nil)
}

// ReadContextTarChecked is ReadContextTar that also calls check with
// every entry's header as the archive is read; an error it returns stops
// the unpacking and is returned (what was unpacked so far stays in out).
func ReadContextTarChecked(ctx context.Context, r io.Reader, out string, check func(*tar.Header) error) (bool, error) {
	return readContextTar(ctx, r, out, check, nil, nil)
}

// ReadContextTarHashed is ReadContextTarChecked that also returns the
// SHA-256 of every regular file it unpacked, by rooted path ("/a/b"),
// computed from the archive's bytes as they stream by (on another
// core): for contexthash.Seed, so that hashing the unpacked context reads
// no file again. A path whose entry was replaced, or that lies below a
// symlink of the archive, may be missing or stale: Seed keeps only what
// it finds on disk as a regular file of the size hashed. The files are
// made from pool's when pool is not nil.
func ReadContextTarHashed(ctx context.Context, r io.Reader, out string, check func(*tar.Header) error, pool *FilePool) (bool, map[string]contexthash.FileSum, error) {
	sums := map[string]contexthash.FileSum{}
	isTar, err := readContextTar(ctx, r, out, check, sums, pool)
	if err != nil || !isTar {
		return isTar, nil, err
	}
	return true, sums, nil
}

func readContextTar(ctx context.Context, r io.Reader, out string, check func(*tar.Header) error, sums map[string]contexthash.FileSum, pool *FilePool) (_ bool, err error) {
	if err := os.Mkdir(out, 0o755); err != nil {
		return false, fmt.Errorf("creating the context directory: %w", err)
	}
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	tr, closeFn, err := openArchive(br)
	if err != nil || tr == nil {
		return false, err
	}
	defer closeFn()
	if check != nil || sums != nil {
		var wait func() error
		tr, wait = scanEntries(tr, check, sums)
		defer func() {
			if cerr := wait(); cerr != nil && err == nil {
				err = fmt.Errorf("unpacking the context archive: %w", cerr)
			}
		}()
	}
	root, err := rooted.Open(out)
	if err != nil {
		return false, err
	}
	defer root.Close()
	opts := layer.Options{
		Sink:             layer.Rootfs,
		LiteralWhiteouts: true,
		BestEffortXattrs: true,
		ClampTimes:       true,
		Unprivileged:     os.Geteuid() != 0,
	}
	if pool != nil {
		opts.CreateFile = pool.Create
	}
	a := layer.NewApplier(root, opts)
	defer a.Close()
	if err := a.Apply(ctx, tr); err != nil {
		return false, fmt.Errorf("unpacking the context archive: %w", err)
	}
	if err := a.Finish(root); err != nil {
		return false, fmt.Errorf("unpacking the context archive: %w", err)
	}
	return true, nil
}

// openArchive returns the decompressed stream of br when it holds a tar
// archive, else nil having read nothing from br. Only the first 64 KiB
// are looked at to decide (Peek), so the caller can still read br whole.
func openArchive(br *bufio.Reader) (io.Reader, func(), error) {
	head, err := br.Peek(br.Size())
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, nil, err
	}
	decomp := func(r io.Reader) (io.Reader, func(), error) {
		switch {
		case bytes.HasPrefix(head, []byte{0x1F, 0x8B, 0x08}):
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, nil, err
			}
			return zr, func() { zr.Close() }, nil
		case bytes.HasPrefix(head, []byte("BZh")):
			return bzip2.NewReader(r), func() {}, nil
		case bytes.HasPrefix(head, []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}):
			xr, err := xz.NewReader(r)
			if err != nil {
				return nil, nil, err
			}
			return xr, func() {}, nil
		case bytes.HasPrefix(head, []byte{0x28, 0xB5, 0x2F, 0xFD}):
			zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, nil, err
			}
			return zr, zr.Close, nil
		}
		return r, func() {}, nil
	}
	compressed := false
	for _, m := range [][]byte{{0x1F, 0x8B, 0x08}, []byte("BZh"), {0xFD, '7', 'z', 'X', 'Z', 0x00}, {0x28, 0xB5, 0x2F, 0xFD}} {
		compressed = compressed || bytes.HasPrefix(head, m)
	}
	if !compressed {
		// A plain tar's first header must parse; compressed input is an
		// archive by its magic alone (as docker build - decides), since a
		// bzip2 or xz block can be larger than what was peeked.
		_, herr := tar.NewReader(bytes.NewReader(head)).Next()
		if herr != nil && herr != io.EOF {
			return nil, nil, nil
		}
		if herr == io.EOF && len(head) < 1024 {
			// Too short for a tar's end marker: an empty or tiny file.
			return nil, nil, nil
		}
	}
	r, closeFn, err := decomp(br)
	if err != nil {
		return nil, nil, err
	}
	return r, closeFn, nil
}

// SubdirPath returns the host path of the directory subdir inside root.
// As BuildKit's git source, every component must be a real directory: a
// symlink on the way is refused, so the path never leads elsewhere.
func SubdirPath(root, subdir string) (string, error) {
	comps := rooted.Split(rooted.Clean(subdir))
	if len(comps) == 0 {
		return root, nil
	}
	r, err := rooted.Open(root)
	if err != nil {
		return "", err
	}
	defer r.Close()
	p := "/"
	for _, c := range comps {
		p = path.Join(p, c)
		st, err := r.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("subdir %s: %w", subdir, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return "", fmt.Errorf("subdir %s: %s is not a directory (a symlink is not followed)", subdir, p)
		}
	}
	return filepath.Join(root, filepath.FromSlash(p)), nil
}

func removeGitDir(dir string) error {
	r, err := rooted.Open(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Dir().RemoveAll(".git")
}

// MaxDockerfileSize bounds a Dockerfile read from a fetched context.
const MaxDockerfileSize = 16 << 20

// ContextFiles copies the Dockerfile named name (a path inside the
// context, as `docker build -f` means it for a remote context) and its
// NAME.dockerignore, if any, out of the fetched context ctxDir into outDir
// through package rooted, and returns the copy's host path: a symlink in
// the context is resolved inside it, and a FIFO or device is refused
// without blocking. It also makes the context's own .dockerignore a
// regular file (its target's bytes, or nothing), so that the build's
// plain read of it can neither leave the tree nor block.
func ContextFiles(ctxDir, name, outDir string) (string, error) {
	r, err := rooted.Open(ctxDir)
	if err != nil {
		return "", err
	}
	defer r.Close()
	df, err := r.ReadFile(name, MaxDockerfileSize)
	if err != nil {
		return "", fmt.Errorf("reading the Dockerfile %s in the build context: %w (name it with -f, relative to the context)", name, err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", err
	}
	out := filepath.Join(outDir, filepath.Base(rooted.Clean(name)))
	if err := os.WriteFile(out, df, 0o600); err != nil {
		return "", err
	}
	if ig, err := r.ReadFile(name+".dockerignore", MaxDockerfileSize); err == nil {
		if err := os.WriteFile(out+".dockerignore", ig, 0o600); err != nil {
			return "", err
		}
	}
	if st, err := r.Lstat("/.dockerignore"); err == nil && st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		ig, rerr := r.ReadFile("/.dockerignore", MaxDockerfileSize)
		if err := r.Dir().RemoveAll(".dockerignore"); err != nil {
			return "", err
		}
		if rerr == nil {
			fd, err := r.Dir().Create(".dockerignore", 0o644)
			if err != nil {
				return "", err
			}
			f := os.NewFile(uintptr(fd), ".dockerignore")
			_, err = f.Write(ig)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return "", err
			}
		}
	}
	return out, nil
}
