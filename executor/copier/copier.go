// Package copier implements the file semantics of COPY, ADD and WORKDIR
// between two plain directory trees (source root and destination root).
package copier

// Op is a JSON-serialisable description of one copy step; the executor
// ships it to its sandbox child.
type Op struct {
	// Kind is "copy", "add" or "mkdir".
	Kind string `json:"kind"`
	// Sources as written in the Dockerfile after variable expansion,
	// relative to the source root (leading "/" and ".." are contained in
	// the root like BuildKit). May contain wildcards (filepath.Match syntax).
	Sources []string `json:"sources,omitempty"`
	// Dest is the absolute destination inside the destination root, with
	// the trailing slash preserved when the Dockerfile had one (the planner
	// has already joined a relative dest to WORKDIR).
	Dest string `json:"dest"`
	// Chown as written ("user", "user:group", "uid:gid"); resolved against
	// the destination root's /etc/passwd and /etc/group. Empty = 0:0.
	Chown string `json:"chown,omitempty"`
	// Chmod as written (octal, e.g. "640"); empty = keep source modes.
	Chmod string `json:"chmod,omitempty"`
	// Excludes are .dockerignore patterns; applied only when non-empty
	// (build context sources).
	Excludes []string `json:"excludes,omitempty"`
	// FromStage is true for COPY --from (stage or image): ownership of the
	// source is kept unless Chown is set, like BuildKit.
	FromStage bool `json:"fromStage,omitempty"`
	// User is the active USER, used by mkdir (WORKDIR) for ownership of the
	// directories it creates.
	User string `json:"user,omitempty"`
}
