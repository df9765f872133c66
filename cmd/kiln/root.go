package main

import (
	"os"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := os.Getenv("KILN_ROOT")
	if root == "" {
		root = "/var/lib/kiln"
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
	cmd.AddCommand(newInspectCmd(), newDebugCmd(&root))
	cmd.AddCommand(registryCommands(&root)...)
	cmd.AddCommand(storeCommands(&root)...)
	cmd.AddCommand(append(infoCommands(&root), newBuildCmd(&root))...)
	return cmd
}
