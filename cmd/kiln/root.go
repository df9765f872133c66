package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/executor"
)

func newRootCmd() *cobra.Command {
	root := os.Getenv("KILN_ROOT")
	if root == "" {
		root = defaultRoot()
	}
	cmd := &cobra.Command{
		Use:   "kiln",
		Short: "kiln builds container images from Dockerfiles, without a daemon",
		Long: `kiln builds container images from Dockerfiles, without a daemon.

It reads the Dockerfile with BuildKit's parser, runs every RUN step in a fresh
namespaced sandbox on an overlay of the previous layers, and writes a standard
OCI image: an OCI archive or layout, a docker load tarball, or a root
filesystem directory.`,
		Example: `  kiln build -t app:1.0 -o type=oci,dest=app.tar .
  kiln build -f Dockerfile.prod --target runtime -o type=docker,dest=app.tar .`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	cmd.PersistentFlags().StringVar(&root, "root", root, "directory for kiln's store and scratch space (env KILN_ROOT)")
	addRemoteFlags(cmd.PersistentFlags()) // --host: remote.go
	cmd.PersistentPreRunE = refuseLocalWithHost
	cmd.AddCommand(newInspectCmd(), newDebugCmd(&root))
	cmd.AddCommand(newBinfmtCmd(), newServeCmd(&root))
	cmd.AddCommand(registryCommands(&root)...)
	cmd.AddCommand(storeCommands(&root)...)
	cmd.AddCommand(append(infoCommands(&root), newBuildCmd(&root))...)
	return cmd
}

// defaultRoot is /var/lib/kiln for root; a normal user's store, which
// root of kiln's user namespace writes, lives in the user's data
// directory, as XDG and podman have it.
func defaultRoot() string {
	if os.Geteuid() == 0 && !executor.Rootless() {
		return "/var/lib/kiln"
	}
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "kiln")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "/var/lib/kiln"
	}
	return filepath.Join(home, ".local", "share", "kiln")
}
