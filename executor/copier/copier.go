// Package copier implements the file semantics of COPY, ADD and WORKDIR
// between two plain directory trees (source root and destination root).
//
// BuildKit is the reference for every behaviour: a Dockerfile COPY is one
// FileOp copy action per source with FollowSymlinks, CopyDirContentsOnly,
// AllowWildcard, AllowEmptyWildcard and CreateDestPath set
// (dockerfile2llb/convert_copy.go), executed by tonistiigi/fsutil/copy; ADD
// adds AttemptUnpack (solver/llbsolver/file/unpack.go); WORKDIR is a FileOp
// mkdir with parents, mode 0755 and the active USER.
package copier

import "fmt"

// Op is a JSON-serialisable description of one copy step; the executor
// ships it to its sandbox child.
type Op struct {
	// Kind is "copy", "add" or "mkdir".
	Kind string `json:"kind"`
	// Sources as written in the Dockerfile after variable expansion,
	// relative to the source root (leading "/" and ".." are contained in
	// the root like BuildKit). May contain wildcards (filepath.Match syntax).
	// Each source is copied on its own, in order, exactly like BuildKit's
	// one-action-per-source: a wildcard that matches nothing copies nothing,
	// and hardlinks are kept among the files of one copied directory, not
	// between sources or wildcard matches.
	Sources []string `json:"sources,omitempty"`
	// Dest is the absolute destination inside the destination root, with
	// the trailing slash preserved when the Dockerfile had one (the planner
	// has already joined a relative dest to WORKDIR). A trailing "/" or "/."
	// makes it a directory; without one a file source is written to Dest
	// itself unless Dest is an existing directory.
	Dest string `json:"dest"`
	// Chown as written ("user", "user:group", "uid:gid"); resolved against
	// the destination root's /etc/passwd and /etc/group. Empty = 0:0 for
	// build-context sources, the source owner for FromStage.
	Chown string `json:"chown,omitempty"`
	// Chmod as written: octal ("640", up to 07777) or a chmod(1) symbolic
	// mode ("u=rwX,go=rX"), both accepted by BuildKit; empty = keep source
	// modes.
	Chmod string `json:"chmod,omitempty"`
	// Excludes are .dockerignore patterns; applied only when non-empty
	// (build context sources). An excluded path is treated as absent from
	// the source root, as it is absent from BuildKit's transferred context.
	Excludes []string `json:"excludes,omitempty"`
	// Selection is what --exclude and --parents keep below each source.
	Selection Selection `json:"selection,omitempty"`
	// FromStage is true for COPY --from (stage or image): ownership of the
	// source is kept unless Chown is set, like BuildKit.
	FromStage bool `json:"fromStage,omitempty"`
	// TopMeta gives a directory named as a source, when it is copied to a
	// new destination, the source's owner, mode and times — a plain COPY
	// gives it only its times. For a cache mount seeded from a stage's
	// directory, which BuildKit shows as that directory itself.
	TopMeta bool `json:"topMeta,omitempty"`
	// User is the active USER, used by mkdir (WORKDIR) for ownership of the
	// directories it creates.
	User string `json:"user,omitempty"`
	// Verify makes the copy check, entry by entry, that what it reads is
	// what Expect lists — the entries (Select's order, Record digests) the
	// step's cache key was computed from — and fail with a
	// *ContextChangedError at the first difference, so that content is
	// never cached under a key computed from other bytes.
	Verify bool    `json:"verify,omitempty"`
	Expect []Entry `json:"expect,omitempty"`
}

// NotFoundError reports a named source that does not exist in the source
// root, or is excluded from it by .dockerignore.
type NotFoundError struct {
	// Path is the missing path, cleaned and relative to the source root
	// ("src/x"; "." for the root itself).
	Path string
	// ExcludedBy is the .dockerignore pattern that excluded Path (or one
	// of its parents), when that is why it is missing.
	ExcludedBy string
}

func (e *NotFoundError) Error() string {
	if e.ExcludedBy != "" {
		return fmt.Sprintf("%q: not found: excluded by .dockerignore pattern %q", e.Path, e.ExcludedBy)
	}
	return fmt.Sprintf("%q: not found", e.Path)
}
