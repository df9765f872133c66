package source

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Resolved is a git ref resolved on the remote.
type Resolved struct {
	// Commit is the full commit name the ref points at (peeled through
	// annotated tags).
	Commit string
	// Name is the full ref name found ("refs/tags/v1", "HEAD"); empty when
	// the ref was a commit.
	Name string
}

// GitEnv is the environment git runs with: the caller's (so git's own
// config, credential helpers and SSH_AUTH_SOCK apply), never prompting on
// a terminal, and limited to network transports unless the user's
// GIT_ALLOW_PROTOCOL says otherwise (a repository cannot make git run an
// ext:: command or read a host path).
func GitEnv() []string {
	env := append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	if _, ok := os.LookupEnv("GIT_ALLOW_PROTOCOL"); !ok {
		env = append(env, "GIT_ALLOW_PROTOCOL=http:https:ssh:git")
	}
	return env
}

// git runs the git CLI and returns its standard output; a failure carries
// what git said.
func git(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ctx.Err() == nil {
			msg := strings.TrimSpace(stderr.String())
			if len(msg) > 2000 {
				msg = msg[:2000] + "…"
			}
			return nil, fmt.Errorf("git %s: %v: %s", args[0], ee, msg)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("running git (install git to use git sources): %w", err)
	}
	return stdout.Bytes(), nil
}

// ResolveGit asks the remote (git ls-remote) which commit g's ref names,
// the way git itself looks a short name up: a full ref name as is, then
// refs/tags/NAME, then refs/heads/NAME; an empty ref is HEAD. A full
// commit name is taken as it is, without asking. The commit must match
// checksum (a hex prefix of it) when that is given. opts say how git
// reaches the remote (WithSSHAgents).
func ResolveGit(ctx context.Context, g *GitRef, checksum string, opts ...GitOption) (Resolved, error) {
	if checksum == "" {
		checksum = g.Checksum
	}
	if checksum != "" && !isHex(checksum) {
		return Resolved{}, fmt.Errorf("checksum %q of git source %s: want a hex commit name", checksum, Redact(g.Remote))
	}
	var res Resolved
	if isCommit(g.Ref) {
		res = Resolved{Commit: strings.ToLower(g.Ref)}
	} else {
		sess, err := startGit(g, opts)
		if err != nil {
			return Resolved{}, err
		}
		out, err := git(ctx, "", sess.env, "ls-remote", "--", g.Remote)
		sess.stop()
		if err = sess.wrap(err); err != nil {
			return Resolved{}, fmt.Errorf("listing the refs of %s: %w", Redact(g.Remote), err)
		}
		refs := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			sha, name, ok := strings.Cut(sc.Text(), "\t")
			if ok {
				refs[name] = sha
			}
		}
		want := g.Ref
		if want == "" {
			want = "HEAD"
		}
		cands := []string{want}
		if !strings.HasPrefix(want, "refs/") && want != "HEAD" {
			cands = []string{"refs/tags/" + want, "refs/heads/" + want, "refs/" + want}
		}
		for _, c := range cands {
			sha, ok := refs[c]
			if !ok {
				continue
			}
			if peeled, ok := refs[c+"^{}"]; ok {
				sha = peeled
			}
			res = Resolved{Commit: sha, Name: c}
			break
		}
		if res.Commit == "" {
			return Resolved{}, fmt.Errorf("git source %s: no ref %q on the remote (name a tag, a branch or a full commit after '#')", Redact(g.Remote), want)
		}
	}
	if checksum != "" && !strings.HasPrefix(res.Commit, strings.ToLower(checksum)) {
		return Resolved{}, fmt.Errorf("git source %s#%s: expected checksum to match %s, got %s; update --checksum or the ref", Redact(g.Remote), g.Ref, checksum, res.Commit)
	}
	return res, nil
}

// Git checks out the commit res names from g's remote into dir, which
// must not exist or be empty: a shallow fetch of that one ref or commit
// where the server allows it, else a full fetch. Without keepGitDir the
// .git directory is removed, as BuildKit's git source does. The subdir
// is not applied here: callers read dir/g.Subdir through package rooted.
// opts say how git reaches the remote (WithSSHAgents).
func Git(ctx context.Context, g *GitRef, res Resolved, dir string, keepGitDir bool, opts ...GitOption) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the checkout directory: %w", err)
	}
	sess, err := startGit(g, opts)
	if err != nil {
		return err
	}
	defer sess.stop()
	env := sess.env
	wrap := func(err error) error {
		return sess.wrap(fmt.Errorf("fetching %s at %s: %w", Redact(g.Remote), res.Commit, err))
	}
	run := func(ctx context.Context, dir string, args ...string) ([]byte, error) {
		return git(ctx, dir, env, args...)
	}
	hasCommit := func(ctx context.Context, dir, commit string) bool {
		_, err := run(ctx, dir, "cat-file", "-e", commit+"^{commit}")
		return err == nil
	}
	if _, err := run(ctx, dir, "init", "-q"); err != nil {
		return wrap(err)
	}
	if _, err := run(ctx, dir, "remote", "add", "origin", g.Remote); err != nil {
		return wrap(err)
	}
	fetched := false
	if res.Name != "" {
		spec := "+" + res.Name + ":" + res.Name
		if res.Name == "HEAD" {
			spec = "HEAD"
		}
		if _, err := run(ctx, dir, "fetch", "-q", "--depth=1", "--no-tags", "origin", spec); err == nil {
			fetched = hasCommit(ctx, dir, res.Commit)
		}
	}
	if !fetched {
		// By commit: servers speaking protocol v2 (or allowing any SHA-1 in
		// want) serve it shallow.
		if _, err := run(ctx, dir, "fetch", "-q", "--depth=1", "--no-tags", "origin", res.Commit); err == nil {
			fetched = hasCommit(ctx, dir, res.Commit)
		}
	}
	if !fetched {
		if _, err := run(ctx, dir, "fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"); err != nil {
			return wrap(err)
		}
		if !hasCommit(ctx, dir, res.Commit) {
			return wrap(fmt.Errorf("the remote does not have commit %s (did the ref move while kiln fetched it? build again)", res.Commit))
		}
	}
	if _, err := run(ctx, dir, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", res.Commit); err != nil {
		return wrap(err)
	}
	// Submodules, as BuildKit fetches them: their URLs come from the
	// untrusted repository, and GitEnv keeps them to network transports.
	if _, err := run(ctx, dir, "submodule", "update", "--init", "--recursive", "--depth=1"); err != nil {
		return sess.wrap(fmt.Errorf("fetching the submodules of %s: %w", Redact(g.Remote), err))
	}
	if keepGitDir {
		// As BuildKit leaves a kept .git: origin without credentials, no
		// FETCH_HEAD naming what was fetched.
		if _, err := run(ctx, dir, "remote", "set-url", "origin", Redact(g.Remote)); err != nil {
			return wrap(err)
		}
		os.Remove(dir + "/.git/FETCH_HEAD")
	}
	if !keepGitDir {
		if err := removeGitDir(dir); err != nil {
			return wrap(err)
		}
	}
	return nil
}
