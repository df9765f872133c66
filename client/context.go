package client

import "io/fs"

// ContextSpec is a build context to send as POST /build's body.
type ContextSpec struct {
	// Dir is the context directory.
	Dir string
	// Excludes are its .dockerignore patterns.
	Excludes []string
	// Keep are slash-separated paths inside Dir sent whatever Excludes
	// say, as the docker CLI sends the Dockerfile and .dockerignore: the
	// server reads them, and applies the patterns again itself.
	Keep []string
	// Extra are files that are not in Dir, added to the archive (a
	// Dockerfile from outside the context, or from stdin).
	Extra []ExtraFile
}

// ExtraFile is a file added to a context archive; its parent
// directories are added too.
type ExtraFile struct {
	Name string // slash-separated, relative
	Data []byte
	Mode fs.FileMode
}
