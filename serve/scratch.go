package serve

import (
	"os"

	"github.com/kiln-build/kiln/contexthash"
)

// maxBackgroundRemovals bounds the scratch directories being removed
// after their responses: removing a 10,000-file context takes about as
// long as unpacking it, and a client building in a loop must not pile
// up removals (and disk) faster than they finish. Past the bound, a
// build's response waits for its own removal.
const maxBackgroundRemovals = 2

// FilePoolPrefix starts the name of the directory, in the scratch
// directory (the store's tmp), where kiln serve keeps the emptied files
// of the contexts it unpacked, whose inodes the next contexts reuse
// (source.FilePool). Run removes it when it returns.
const FilePoolPrefix = "serve-inodes-"

// maxPoolFiles bounds the files kept for reuse: empty, they cost an
// inode each and no data.
const maxPoolFiles = 100_000

// cleanScratch removes a build's scratch directory (if it made one),
// forgets the context hash state kept for its context directory ctxDir,
// then releases the scratch space and counts the build out of those in
// flight. It works in the background when it can, so that the response
// ends without waiting for it: the directory is in the store's tmp
// still, which a prune leaves alone until release (HoldScratch), Run
// waits for before it returns (SIGTERM), and the store empties when it
// is next opened by nobody else (a kiln serve that was killed).
func (s *Server) cleanScratch(scratch, ctxDir string, release func()) {
	clean := func() {
		if scratch != "" {
			if ctxDir != "" {
				s.files.Fill(ctxDir)
			}
			os.RemoveAll(scratch)
		}
		if ctxDir != "" && s.buildOpts.ContextHashDir != "" {
			contexthash.Forget(s.buildOpts.ContextHashDir, ctxDir)
		}
		release()
		s.builds.leave()
	}
	if scratch == "" {
		clean()
		return
	}
	select {
	case s.removals <- struct{}{}:
		go func() {
			defer func() { <-s.removals }()
			clean()
		}()
	default:
		clean()
	}
}
