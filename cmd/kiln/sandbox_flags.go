package main

import (
	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/executor"
)

// addSandboxFlags registers the flags that shape every RUN sandbox and
// returns the function that reads them once parsed.
func addSandboxFlags(fs *pflag.FlagSet) func() (executor.Sandbox, error) {
	return func() (executor.Sandbox, error) { return executor.Sandbox{}, nil }
}
