// Package initbin carries kiln-init, the sandbox init of RUN steps
// (cmd/kiln-init), inside the kiln binary. `make build` builds it into
// files/ before building kiln; a plain `go build` finds only the
// placeholder there, and kiln then re-executes itself as the init.
package initbin

import "embed"

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
