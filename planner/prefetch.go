package planner

import (
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/util/system"

	"github.com/kiln-build/kiln/contexthash"
)

// prefetchContext starts hashing what the first COPY (or ADD) of stage s
// reads from the context while the stage's base image resolves: a no-op
// rebuild's two waits, the registry and the context walk, then overlap.
// Only a COPY that no step before it in the stage could delay (just
// metadata instructions before it, a base that is an image) and whose
// sources name no variable: the context is hashed when the build starts,
// as BuildKit snapshots it, never long before the COPY runs.
func prefetchContext(h *contexthash.Hasher, s *stage, excludes []string) {
	if s.base != nil {
		return
	}
	for _, c := range s.st.Commands {
		var sd instructions.SourcesAndDest
		switch c := c.(type) {
		case *instructions.CopyCommand:
			if c.From != "" || c.Parents || len(c.ExcludePatterns) > 0 {
				return
			}
			sd = c.SourcesAndDest
		case *instructions.AddCommand:
			if len(c.ExcludePatterns) > 0 {
				return
			}
			sd = c.SourcesAndDest
		case *instructions.EnvCommand, *instructions.ArgCommand, *instructions.LabelCommand,
			*instructions.MaintainerCommand, *instructions.UserCommand, *instructions.ExposeCommand,
			*instructions.CmdCommand, *instructions.EntrypointCommand, *instructions.StopSignalCommand,
			*instructions.ShellCommand, *instructions.VolumeCommand, *instructions.HealthCheckCommand:
			continue
		default:
			return // a step that may take long runs first
		}
		if len(sd.SourcePaths) == 0 {
			return
		}
		sources := make([]string, 0, len(sd.SourcePaths))
		for _, src := range sd.SourcePaths {
			if strings.Contains(src, "$") || strings.Contains(src, "://") {
				return // expanded by the stage, or a URL
			}
			// as dispatchCopy names them
			p, err := system.NormalizePath("/", src, targetOS, false)
			if err != nil {
				return
			}
			sources = append(sources, p)
		}
		h.Prefetch(sources, excludes)
		return
	}
}
