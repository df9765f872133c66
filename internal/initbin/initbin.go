// Package initbin carries kiln-init, the sandbox init of RUN steps
// (cmd/kiln-init), inside the kiln binary. `make build` builds it into
// files/ before building kiln; a plain `go build` finds only the
// placeholder there, and kiln then re-executes itself as the init.
package initbin

import (
	"embed"
	"io"
)

//go:embed files
var files embed.FS

// Binary returns kiln-init's executable, or nil when kiln was built
// without it.
func Binary() []byte {
	b, err := files.ReadFile("files/kiln-init")
	if err != nil || len(b) == 0 {
		return nil
	}
	return b
}

// Reader returns kiln-init's executable and its size without copying it
// out of the kiln binary (nil when kiln was built without it): loading it
// into the sandbox's memfd then costs no 2.5 MB of fresh heap.
func Reader() (io.ReaderAt, int64) {
	f, err := files.Open("files/kiln-init")
	if err != nil {
		return nil, 0
	}
	fi, err := f.Stat()
	r, ok := f.(io.ReaderAt)
	if err != nil || !ok || fi.Size() == 0 {
		return nil, 0
	}
	return r, fi.Size()
}
