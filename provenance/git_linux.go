package provenance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-build/kiln/rooted"
)

// maxGitFile bounds what is read of one file under .git: HEAD, a ref and a
// config are tiny; packed-refs of a large repository is a few MiB.
const maxGitFile = 16 << 20

// ReadGit finds the git checkout dir lies in (dir itself or a parent, as
// git does) and reads HEAD's commit, its branch and the remote, from the
// files under .git, without running git and without the network. It
// returns nil, nil when dir is in no checkout. The repository is the
// user's, but a context may come from anyone: every file is read through
// package rooted (no symlink leaves the git directory, no FIFO blocks) and
// only a commit id and a URL line ever reach the provenance.
func ReadGit(dir string) (*Git, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dir, err)
	}
	gitDir := ""
	for d := abs; ; d = filepath.Dir(d) {
		p := filepath.Join(d, ".git")
		fi, err := os.Lstat(p)
		if err == nil {
			switch {
			case fi.IsDir():
				gitDir = p
			case fi.Mode().IsRegular():
				// A worktree or submodule: ".git" is a file saying
				// "gitdir: PATH".
				if gitDir, err = gitdirFile(d); err != nil {
					return nil, err
				}
			}
			if gitDir != "" {
				break
			}
		}
		if d == filepath.Dir(d) {
			return nil, nil
		}
	}
	return readGitDir(gitDir)
}

func gitdirFile(worktree string) (string, error) {
	r, err := rooted.Open(worktree)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := r.ReadFile("/.git", 4096)
	if err != nil {
		return "", fmt.Errorf("reading %s/.git: %w", worktree, err)
	}
	p, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir:")
	if !ok {
		return "", fmt.Errorf("reading %s/.git: not a gitdir: file", worktree)
	}
	p = strings.TrimSpace(p)
	if !filepath.IsAbs(p) {
		p = filepath.Join(worktree, p)
	}
	return p, nil
}

func readGitDir(gitDir string) (*Git, error) {
	gd, err := rooted.Open(gitDir)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", gitDir, err)
	}
	defer gd.Close()
	// A linked worktree keeps HEAD in its own directory and branches,
	// packed-refs and config in the common one.
	common := gd
	if b, err := gd.ReadFile("/commondir", 4096); err == nil {
		p := strings.TrimSpace(string(b))
		if !filepath.IsAbs(p) {
			p = filepath.Join(gitDir, p)
		}
		if common, err = rooted.Open(p); err != nil {
			return nil, fmt.Errorf("opening %s: %w", p, err)
		}
		defer common.Close()
	}

	head, err := gd.ReadFile("/HEAD", 4096)
	if err != nil {
		return nil, fmt.Errorf("reading %s/HEAD: %w", gitDir, err)
	}
	g := &Git{}
	h := strings.TrimSpace(string(head))
	if ref, ok := strings.CutPrefix(h, "ref:"); ok {
		g.Ref = strings.TrimSpace(ref)
		if !strings.HasPrefix(g.Ref, "refs/") || strings.Contains(g.Ref, "..") {
			return nil, fmt.Errorf("reading %s/HEAD: odd ref %q", gitDir, g.Ref)
		}
		if g.Commit, err = resolveRef(gd, common, g.Ref); err != nil {
			return nil, fmt.Errorf("resolving %s in %s: %w", g.Ref, gitDir, err)
		}
	} else if isHex(h) {
		g.Commit = h
	} else {
		return nil, fmt.Errorf("reading %s/HEAD: neither a ref nor a commit id", gitDir)
	}
	if g.Commit == "" {
		return nil, nil // a repository with no commit yet
	}

	if cfg, err := common.ReadFile("/config", maxGitFile); err == nil {
		remotes, order, branchRemote := parseRemotes(string(cfg))
		name := branchRemote[strings.TrimPrefix(g.Ref, "refs/heads/")]
		if _, ok := remotes[name]; !ok {
			name = "origin"
		}
		if _, ok := remotes[name]; !ok && len(order) > 0 {
			name = order[0]
		}
		g.Remote = cleanRemote(remotes[name])
	}
	return g, nil
}

// resolveRef finds ref's commit: a loose ref file (in the worktree's own
// directory, then the common one), else packed-refs; "" when the branch
// has no commit yet.
func resolveRef(own, common *rooted.Root, ref string) (string, error) {
	for _, r := range []*rooted.Root{own, common} {
		b, err := r.ReadFile("/"+ref, 4096)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		c := strings.TrimSpace(string(b))
		if !isHex(c) {
			return "", fmt.Errorf("ref file %s holds no commit id", ref)
		}
		return c, nil
	}
	b, err := common.ReadFile("/packed-refs", maxGitFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		id, name, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && name == ref && isHex(id) {
			return id, nil
		}
	}
	return "", nil
}
