// Package executor runs Dockerfile steps against overlay root filesystems:
// RUN in a fresh namespaced sandbox, COPY/ADD/WORKDIR through the copier, both
// in a re-executed child of the kiln binary so that every mount dies with the
// child's mount namespace.
package executor

import (
	"fmt"
	"io"
	"os"

	"github.com/kiln-build/kiln/executor/copier"
)

// Rootfs is an overlay view. Lowers are directories in overlay format
// (whiteouts as 0:0 char devices, opaque dirs as trusted.overlay.opaque=y),
// top-most first. Upper and Work are fresh empty directories on the same
// filesystem; when Upper is empty the view is mounted read-only.
type Rootfs struct {
	Lowers []string
	Upper  string
	Work   string
}

// RunSpec is one RUN step.
type RunSpec struct {
	Rootfs Rootfs
	Args   []string // argv, already shell-wrapped by the planner
	// Env is the command's environment, KEY=VALUE. argv[0] is looked up in
	// its PATH. Like runc (and so BuildKit), HOME is added from the user's
	// passwd entry ("/" without one) when Env has none.
	Env []string
	Cwd string // absolute path inside the rootfs; created (root-owned) if missing; "" is "/"
	// User as written in the Dockerfile USER instruction ("", "name",
	// "uid", "name:group", "uid:gid"); resolved inside the rootfs against
	// /etc/passwd and /etc/group, with supplementary groups.
	User string
	// Files are provided to the command and never reach the layer: under
	// /dev they are written to the sandbox's /dev tmpfs (BuildKit runs a
	// heredoc script with a shebang from /dev/pipes), elsewhere they are
	// bind-mounted read-only.
	Files    []File
	Hostname string // "" is "buildkitsandbox"
	Network  string // "host" (default, also "") or "none"
	// Stdout and Stderr receive the command's output; nil discards it. An
	// *os.File is handed to the command as is, anything else through a
	// pipe.
	Stdout io.Writer
	Stderr io.Writer

	// Sandbox carries the build-wide sandbox settings (limits, hardening);
	// the planner passes it through unchanged.
	Sandbox Sandbox
	// Security is RUN --security: "" or "sandbox" (default), "insecure".
	Security string
	// Mounts are RUN --mount mounts, applied after the rootfs is mounted.
	Mounts []Mount
}

// Sandbox holds the build-wide settings of every RUN sandbox.
type Sandbox struct{}

// Mount is one RUN --mount: Source (a host directory or file) bind-mounted
// at Target, or a tmpfs when Type is "tmpfs".
type Mount struct {
	Type     string `json:"type"` // "bind" or "tmpfs"
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	Readonly bool   `json:"readonly,omitempty"`
}

// File is a file the sandbox provides to a RUN command, owned by root.
type File struct {
	Path string // absolute, inside the sandbox
	Data []byte
	Mode os.FileMode // permission bits; 0 is 0644
}

// ExitError reports a RUN command that exited non-zero or was killed.
type ExitError struct {
	Code   int    // exit status, or 128+signal
	Signal string // set when killed by a signal, without "SIG": "KILL"
	// Reason is set when the command could not be started at all, e.g.
	// `exec: "foo": executable file not found in $PATH` (Code 127, like a
	// shell) or a permission error (Code 126).
	Reason string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("exit code %d", e.Code)
	if e.Signal != "" {
		msg = "killed by signal " + e.Signal
	}
	if e.Reason != "" {
		return e.Reason + ": " + msg
	}
	return msg
}

// CopySpec is one COPY, ADD or WORKDIR step: the copier's Op runs with the
// destination rootfs mounted read-write and, when Source has Lowers, a
// read-only overlay of the source stage.
type CopySpec struct {
	Rootfs Rootfs
	// SourceDir is a plain host directory holding the sources (the build
	// context, or a directory of heredoc files). Ignored when Source has
	// lowers; may be empty for an op without sources (mkdir).
	SourceDir string
	// Source is a read-only view of another stage or image (COPY --from).
	Source Rootfs
	Op     copier.Op
}
