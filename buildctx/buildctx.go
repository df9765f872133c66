// Package buildctx reads `--build-context NAME=VALUE`: the named build
// contexts that a Dockerfile's FROM NAME, COPY --from=NAME and RUN
// --mount=from=NAME use instead of a stage or an image of that name, as
// BuildKit's dockerui frontend and buildx define them. A value is a local
// directory, docker-image://REF, oci-layout://PATH[:TAG][@DIGEST], an
// https:// tarball or a git URL.
package buildctx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Kind is what a named context is.
type Kind int

// The kinds of named context.
const (
	Dir    Kind = iota // a local directory
	Image              // docker-image://REF
	Layout             // oci-layout://PATH[:TAG][@DIGEST]
	Remote             // an https:// tarball or a git URL
)

// Source is one --build-context value.
type Source struct {
	Kind Kind
	// Spec is the value as given, for messages.
	Spec string
	// Dir is the absolute directory (Dir) or OCI layout (Layout).
	Dir string
	// Ref is the image reference (Image).
	Ref string
	// Tag and Digest select the image of a Layout: by digest when set,
	// else by tag (default "latest"; a layout holding a single image
	// needs neither).
	Tag    string
	Digest string
	// URL is the remote source (Remote).
	URL string
}

// Reserved names are never looked up as named contexts by BuildKit: FROM
// scratch is the empty image and "context" is the main build context.
var reserved = []string{"scratch", "context"}

// ParseFlag parses one --build-context NAME=VALUE. The name comes back
// normalised as BuildKit compares it (docker.io/library/alpine:latest is
// alpine). Relative directories are taken from the current directory.
func ParseFlag(value string) (string, Source, error) {
	k, v, ok := strings.Cut(value, "=")
	if !ok || k == "" || v == "" {
		return "", Source{}, fmt.Errorf("--build-context %q: want NAME=VALUE (VALUE a directory, docker-image://REF, oci-layout://PATH[:TAG|@DIGEST], an https:// URL or a git URL)", value)
	}
	n, err := Normalize(k)
	if err != nil {
		return "", Source{}, fmt.Errorf("--build-context %s: invalid context name %q: %w (a name is written like an image name: lower case letters, digits, '-', '_', '.', '/', and an optional :TAG)", value, k, err)
	}
	for _, r := range reserved {
		if strings.EqualFold(n, r) {
			return "", Source{}, fmt.Errorf("--build-context %s: the name %q is reserved (FROM scratch is the empty image and the main context is the CONTEXT argument); choose another name", value, k)
		}
	}
	src, err := parseValue(v)
	if err != nil {
		return "", Source{}, fmt.Errorf("--build-context %s: %w", value, err)
	}
	return n, src, nil
}

// Normalize is the name a context or a FROM/--from reference is looked up
// by: the short ("familiar") form of an image reference, without a
// :latest tag, as BuildKit's NamedContext computes it.
func Normalize(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	c := r.Context()
	repo := c.RepositoryStr()
	reg := c.RegistryStr()
	out := repo
	if reg != name.DefaultRegistry && reg != "docker.io" {
		out = reg + "/" + repo
	} else if rest, ok := strings.CutPrefix(repo, "library/"); ok && !strings.Contains(rest, "/") {
		out = rest
	}
	switch r := r.(type) {
	case name.Tag:
		if t := r.TagStr(); t != "latest" {
			out += ":" + t
		}
	case name.Digest:
		out += "@" + r.DigestStr()
	}
	return out, nil
}

func parseValue(v string) (Source, error) {
	src := Source{Spec: v}
	switch {
	case strings.HasPrefix(v, "docker-image://"):
		ref := strings.TrimPrefix(v, "docker-image://")
		if ref != "scratch" {
			if _, err := name.ParseReference(ref); err != nil {
				return src, fmt.Errorf("invalid image reference %q: %w", ref, err)
			}
		}
		src.Kind, src.Ref = Image, ref
		return src, nil
	case strings.HasPrefix(v, "oci-layout://"):
		return parseLayout(src, strings.TrimPrefix(v, "oci-layout://"))
	case isGitURL(v) || strings.HasPrefix(v, "https://") || strings.HasPrefix(v, "http://"):
		src.Kind, src.URL = Remote, v
		return src, nil
	case strings.HasPrefix(v, "target:"):
		return src, errors.New("target: contexts are a bake feature kiln does not have; build that target first with -t NAME and use docker-image://NAME")
	}
	if scheme, _, ok := strings.Cut(v, "://"); ok && !strings.ContainsAny(scheme, "/.") {
		return src, fmt.Errorf("unsupported context source %s://; use a directory, docker-image://REF, oci-layout://PATH[:TAG|@DIGEST], an https:// URL or a git URL", scheme)
	}
	dir, err := existingDir(v)
	if err != nil {
		return src, err
	}
	src.Kind, src.Dir = Dir, dir
	return src, nil
}

// parseLayout splits PATH[:TAG][@sha256:HEX]; the tag is looked for in
// the last path element only, so that a directory name holding a colon
// elsewhere still works.
func parseLayout(src Source, spec string) (Source, error) {
	p := spec
	if i := strings.LastIndex(p, "@"); i >= 0 && strings.Contains(p[i:], ":") {
		src.Digest = p[i+1:]
		p = p[:i]
		if _, err := v1.NewHash(src.Digest); err != nil {
			return src, fmt.Errorf("oci-layout://%s: invalid digest %q: %w", spec, src.Digest, err)
		}
	}
	if i := strings.LastIndex(p, ":"); i > strings.LastIndex(p, "/") && i >= 0 {
		src.Tag = p[i+1:]
		p = p[:i]
		if src.Tag == "" {
			return src, fmt.Errorf("oci-layout://%s: empty tag after ':'", spec)
		}
	}
	if p == "" {
		return src, fmt.Errorf("oci-layout://%s: no layout directory given", spec)
	}
	dir, err := existingDir(p)
	if err != nil {
		return src, fmt.Errorf("oci-layout: %w", err)
	}
	src.Kind, src.Dir = Layout, dir
	return src, nil
}

func existingDir(p string) (string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("reading build context directory: %w (give an existing directory, or a docker-image:// or oci-layout:// value)", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("build context %s is not a directory", p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", p, err)
	}
	return abs, nil
}

// isGitURL tells git sources the way BuildKit's gitutil does: the git,
// ssh and git@ forms, and http(s) URLs of a .git repository (with an
// optional #ref:subdir fragment).
func isGitURL(v string) bool {
	for _, p := range []string{"git://", "ssh://", "git@", "github.com/"} {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	if strings.HasPrefix(v, "https://") || strings.HasPrefix(v, "http://") {
		u, _, _ := strings.Cut(v, "#")
		return strings.HasSuffix(u, ".git")
	}
	return false
}
