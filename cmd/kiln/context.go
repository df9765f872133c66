package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/kiln-build/kiln/source"
	"github.com/kiln-build/kiln/sshforward"
)

// resolveContext turns the CONTEXT argument into a local directory: a
// directory is used as it is; "-" reads stdin (a tar, plain or
// compressed, or a Dockerfile alone, as `docker build -`); a git URL or
// an http(s) URL is fetched (package source). A fetched context is
// untrusted: its Dockerfile (-f names it inside the context) is copied
// out through package rooted, and dockerfile is that copy's path. cleanup
// removes what was fetched. A git URL over ssh is fetched with the --ssh
// default agent of ssh, served from a private directory of the fetch's
// own temporary directory.
func resolveContext(ctx context.Context, arg, file string, ssh sshforward.Agents) (dir, dockerfile string, cleanup func(), err error) {
	cleanup = func() {}
	if arg != "-" {
		if st, err := os.Stat(arg); err == nil && st.IsDir() {
			return arg, file, cleanup, nil
		}
		if !source.IsRemoteContext(arg) {
			return "", "", cleanup, usagef("build context %q is not a directory, -, a git URL or an http(s) URL", arg)
		}
	} else if file == "-" {
		return "", "", cleanup, usagef("the build context and the Dockerfile cannot both come from stdin: drop -f - or give a CONTEXT")
	}
	tmp, err := os.MkdirTemp("", "kiln-context-")
	if err != nil {
		return "", "", cleanup, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	var c source.Context
	if arg == "-" {
		c, err = source.ReadStdinContext(ctx, os.Stdin, tmp)
	} else {
		c, err = source.FetchContext(ctx, arg, tmp, source.WithSSHAgents(ssh, tmp))
	}
	if err != nil {
		return "", "", cleanup, err
	}
	if c.Dockerfile != "" {
		if file != "" {
			return "", "", cleanup, usagef("-f %s: the context %s is a Dockerfile, not an archive or a repository; drop -f", file, arg)
		}
		return c.Dir, c.Dockerfile, cleanup, nil
	}
	if file == "-" {
		return c.Dir, file, cleanup, nil
	}
	if file == "" {
		file = "Dockerfile"
	}
	df, err := source.ContextFiles(c.Dir, file, filepath.Join(tmp, "dockerfile"))
	if err != nil {
		return "", "", cleanup, err
	}
	return c.Dir, df, cleanup, nil
}
