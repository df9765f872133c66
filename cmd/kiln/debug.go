package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/planner"
)

// debugDir is where --on-error=keep keeps the failed steps of a build.
func debugDir(root, buildID string) string { return filepath.Join(root, "debug", buildID) }

func newDebugCmd(root *string) *cobra.Command {
	var rm bool
	cmd := &cobra.Command{
		Use:   "debug [--rm] BUILD_ID [-- COMMAND...]",
		Short: "Open a shell where a RUN step failed (after kiln build --on-error=keep)",
		Long: `Open a shell in a sandbox on the filesystem a failed RUN step left, with the
step's environment, user, working directory and network: the build must have
run with --on-error=keep, which prints the BUILD_ID. Changes made in the shell
are thrown away, so the state can be entered again; --rm discards it.`,
		Example: `  kiln build --on-error=keep .
  kiln debug 20261127-164907-e81436
  kiln debug 20261127-164907-e81436 -- cat /var/log/build.log
  kiln debug --rm 20261127-164907-e81436`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usagef("debug needs the BUILD_ID that kiln build --on-error=keep printed")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := debugDir(*root, filepath.Base(args[0]))
			steps, _ := filepath.Glob(filepath.Join(dir, "step-*"))
			if len(steps) == 0 {
				return usagef("no kept failure %s under %s (build with --on-error=keep)", args[0], filepath.Join(*root, "debug"))
			}
			if rm {
				if err := os.RemoveAll(dir); err != nil {
					return fmt.Errorf("removing %s: %w", dir, err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "removed the kept state of build %s\n", args[0])
				return nil
			}
			sort.Strings(steps)
			st, err := planner.ReadDebugState(steps[0])
			if err != nil {
				return fmt.Errorf("reading the kept state: %w", err)
			}
			argv := []string{"/bin/sh"}
			if len(args) > 1 {
				argv = args[1:]
			}
			store, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer store.Close()
			tmp, err := store.TempDir("debug")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			upper, work := filepath.Join(tmp, "upper"), filepath.Join(tmp, "work")
			for _, d := range []string{upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "kiln debug: %s\n  as %q in %s; exit the shell to leave (changes are discarded)\n", st.Step, orRoot(st.User), st.Cwd)
			// The shell owns the terminal's Ctrl-C: the session ends when it exits.
			err = executor.Run(context.Background(), executor.RunSpec{
				Rootfs:  executor.Rootfs{Lowers: append([]string{st.Upper}, st.Lowers...), Upper: upper, Work: work},
				Args:    argv,
				Env:     st.Env,
				Cwd:     st.Cwd,
				User:    st.User,
				Network: st.Network,
				// The build that kept this state ran with host networking
				// only if it was granted.
				Sandbox: debugSandbox(st.Network),
				Stdin:   os.Stdin,
				Stdout:  os.Stdout,
				Stderr:  os.Stderr,
			})
			var ee *executor.ExitError
			if errors.As(err, &ee) {
				return &exitStatus{code: ee.Code}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&rm, "rm", false, "discard the kept state instead of entering it")
	return cmd
}

func orRoot(u string) string {
	if u == "" {
		return "root"
	}
	return u
}

// exitStatus passes a debug shell's exit code through as kiln's.
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// debugSandbox grants a debug shell the host network its failed step had.
func debugSandbox(network string) executor.Sandbox {
	if network == executor.NetworkHost {
		return executor.Sandbox{Allow: []string{executor.EntitlementNetworkHost}}
	}
	return executor.Sandbox{}
}
