// Command kiln-init is PID 1 of a kiln RUN step's sandbox (package
// executor/stepinit). `make build` builds it static and embeds it into
// kiln, which starts it for each RUN step; it is not meant to be run by
// hand.
package main

import (
	"fmt"
	"os"

	"github.com/kiln-build/kiln/executor/stepinit"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != stepinit.SandboxArg {
		fmt.Fprintln(os.Stderr, "kiln-init: the sandbox init of kiln's RUN steps; kiln starts it, with the step's spec on fd 3: run kiln instead")
		os.Exit(2)
	}
	os.Exit(stepinit.Main())
}
