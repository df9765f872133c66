//go:build !linux

package source

import (
	"context"
	"io"
)

// Context is a build context fetched from somewhere that is not a local
// directory (Linux only).
type Context struct {
	Dir        string
	Dockerfile string
}

// IsRemoteContext reports whether ref names a git or http(s) context.
func IsRemoteContext(ref string) bool { return IsGit(ref) || IsHTTP(ref) }

// FetchContext needs Linux (package rooted).
func FetchContext(context.Context, string, string, ...GitOption) (Context, error) {
	return Context{}, errNotSupported
}

// ReadStdinContext needs Linux (package rooted).
func ReadStdinContext(context.Context, io.Reader, string) (Context, error) {
	return Context{}, errNotSupported
}

// SubdirPath needs Linux (package rooted).
func SubdirPath(root, subdir string) (string, error) { return "", errNotSupported }

func removeGitDir(string) error { return errNotSupported }

// ContextFiles needs Linux (package rooted).
func ContextFiles(ctxDir, name, outDir string) (string, error) { return "", errNotSupported }
