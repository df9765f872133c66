package parser

import "strings"

// dockerfileFrontend reports whether ref, a "# syntax=" value, names the
// Dockerfile frontend: the repository docker/dockerfile or
// docker/dockerfile-upstream on any registry (Docker Hub, a mirror such as
// mirror.gcr.io, ghcr.io …), at any tag or digest. labs is true for the
// "-labs" tags. kiln is that frontend, so such a line runs the builtin one.
func dockerfileFrontend(ref string) (ok, labs bool) {
	name, tag := ref, ""
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i] // a digest pins the image: any is this frontend
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name, tag = name[:i], name[i+1:]
	}
	parts := strings.Split(name, "/")
	if len(parts) > 2 && isRegistryHost(parts[0]) {
		parts = parts[1:]
	}
	if len(parts) != 2 || parts[0] != "docker" || (parts[1] != "dockerfile" && parts[1] != "dockerfile-upstream") {
		return false, false
	}
	return true, strings.HasSuffix(tag, "-labs") || tag == "labs"
}

// isRegistryHost tells a registry host from a repository path component as
// the reference grammar does: it has a dot or a port, or is localhost.
func isRegistryHost(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost"
}

// CheckSyntax refuses a "# syntax=" line naming a frontend other than the
// Dockerfile one, with its line, as Parse does.
func CheckSyntax(name string, src []byte) error { return checkSyntax(name, src) }
