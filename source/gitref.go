// Package source fetches untrusted remote content — an HTTP(S) download,
// a git checkout, a build context from a URL or a tar on stdin — into a
// directory the build owns. What it writes below that directory goes
// through package rooted (single files) or package layer's applier
// (archives); a git checkout is written by git itself into an empty
// directory and only ever read back through rooted.
package source

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/moby/buildkit/util/gitutil"
)

// GitRef is a git source as a Dockerfile names it, parsed with BuildKit's
// rules (frontend/dockerfile/dfgitutil): "https://host/repo.git#ref:subdir",
// "git@host:repo.git#ref", "git://host/repo#ref", "ssh://…", and the query
// form "…/repo.git?ref=v1&subdir=dir".
type GitRef struct {
	// Remote is the URL handed to git, without fragment or query.
	Remote string
	// Ref is a tag, branch, full ref name or commit; empty means HEAD.
	Ref string
	// Subdir is the directory of the repository to use, clean and
	// relative ("" for the root).
	Subdir string
	// Checksum is the expected commit (a hex prefix of it), from the
	// query's checksum= or commit=; ADD --checksum adds to it.
	Checksum string
	// KeepGitDir is the query's keep-git-dir, when given.
	KeepGitDir *bool
}

// IsGit reports whether src names a git repository, as BuildKit decides
// it for ADD sources and build contexts: a git://, ssh:// or scp-style
// (user@host:path) URL, or an http(s) URL whose path ends in ".git".
func IsGit(src string) bool {
	_, ok, _ := ParseGit(src)
	return ok
}

// IsHTTP reports whether src is an http(s) URL that is not a git
// repository: ADD downloads it as one file.
func IsHTTP(src string) bool {
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		return false
	}
	return !IsGit(src)
}

// ParseGit parses a git source. ok reports whether src is meant as a git
// source at all; err, when ok, says what is wrong with it.
func ParseGit(src string) (ref *GitRef, ok bool, err error) {
	if strings.HasPrefix(src, "./") || strings.HasPrefix(src, "../") || strings.HasPrefix(src, "-") {
		return nil, false, nil
	}
	u, err := gitutil.ParseURL(src)
	if err != nil {
		// Not a git URL at all (a local path, an unknown scheme).
		return nil, false, nil
	}
	switch u.Scheme {
	case gitutil.HTTPProtocol, gitutil.HTTPSProtocol:
		if !strings.HasSuffix(u.Path, ".git") {
			return nil, false, nil
		}
	}
	if u.Host == "" || strings.HasPrefix(u.Host, "-") || strings.HasPrefix(u.Remote, "-") {
		// git would read "-…" as an option, and a URL without a host
		// has nothing to fetch from.
		return nil, true, fmt.Errorf("git source %q: want a URL with a host, like https://host/repo.git#ref or git@host:repo.git", src)
	}
	ref = &GitRef{Remote: u.Remote}
	if u.Opts != nil {
		ref.Ref, ref.Subdir = u.Opts.Ref, u.Opts.Subdir
	}
	if err := ref.loadQuery(u.Query); err != nil {
		return nil, true, fmt.Errorf("git source %q: %w", src, err)
	}
	ref.Subdir = strings.TrimPrefix(path.Clean("/"+ref.Subdir), "/")
	if strings.HasPrefix(ref.Ref, "-") {
		return nil, true, fmt.Errorf("git source %q: ref %q cannot start with '-'", src, ref.Ref)
	}
	return ref, true, nil
}

// loadQuery applies the query form of BuildKit's git URLs.
func (g *GitRef) loadQuery(q url.Values) error {
	var tag, branch string
	for k, v := range q {
		if len(v) > 1 {
			return fmt.Errorf("query %q has multiple values", k)
		}
		val := ""
		if len(v) == 1 {
			val = v[0]
		}
		if val == "" && k != "keep-git-dir" {
			return fmt.Errorf("query %q has no value", k)
		}
		switch k {
		case "ref":
			if g.Ref != "" && g.Ref != val {
				return fmt.Errorf("ref conflicts: %q vs %q", g.Ref, val)
			}
			g.Ref = val
		case "tag":
			tag = val
		case "branch":
			branch = val
		case "subdir":
			if g.Subdir != "" && g.Subdir != val {
				return fmt.Errorf("subdir conflicts: %q vs %q", g.Subdir, val)
			}
			g.Subdir = val
		case "checksum", "commit":
			g.Checksum = val
		case "keep-git-dir":
			b := true
			if val != "" {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return fmt.Errorf("invalid keep-git-dir value: %q", val)
				}
			}
			g.KeepGitDir = &b
		default:
			return fmt.Errorf("unexpected query %q (kiln knows ref, tag, branch, subdir, checksum, commit and keep-git-dir)", k)
		}
	}
	if tag != "" && branch != "" {
		return errors.New("branch conflicts with tag")
	}
	for _, x := range []struct{ v, prefix string }{{tag, "refs/tags/"}, {branch, "refs/heads/"}} {
		if x.v == "" {
			continue
		}
		full := x.v
		if !strings.HasPrefix(full, x.prefix) {
			full = x.prefix + full
		}
		if g.Ref != "" && g.Ref != full {
			return fmt.Errorf("ref conflicts: %q vs %q", g.Ref, full)
		}
		g.Ref = full
	}
	return nil
}

// isCommit reports whether s is a full SHA-1 or SHA-256 commit name.
func isCommit(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	return isHex(s)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}
