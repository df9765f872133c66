package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/emulate"
)

func newBinfmtCmd() *cobra.Command {
	var install bool
	var platformList string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "binfmt",
		Short: "List or register the QEMU handlers that run RUN steps of other architectures",
		Long: `Without flags, list the platforms a RUN step can execute on this machine and
the binfmt_misc handlers that run foreign binaries, saying why any of them is
unusable.

With --install, register Debian's qemu-user-static emulators as binfmt_misc
handlers with the F flag (the kernel opens the emulator once, so it works
inside RUN's sandbox), mounting binfmt_misc first if needed. A handler
registered without F is replaced; one that works is kept. This changes the
whole machine until reboot, needs root, and is only ever done by this command.`,
		Example: `  apt-get install qemu-user-static
  kiln binfmt --install                      # every installed emulator
  kiln binfmt --install --platform arm64,arm
  kiln binfmt`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if cmd.Flags().Changed("platform") && !install {
				return usagef("--platform selects what --install registers: add --install")
			}
			if install {
				qs, err := emulate.Select(strings.Split(platformList, ","))
				if err != nil {
					return err
				}
				done, err := emulate.Install(qs)
				for _, a := range done {
					fmt.Fprintf(w, "%-14s %s (%s, %s)\n", a.Platform, a.Did, a.Name, a.Interpreter)
				}
				if err != nil {
					return err
				}
			}
			r := gatherEmulation()
			if asJSON {
				return writeJSON(w, r)
			}
			if install {
				fmt.Fprintln(w)
			}
			printEmulation(w, r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "register QEMU handlers with the F flag (root)")
	cmd.Flags().StringVar(&platformList, "platform", "all", "with --install: platforms to register, comma-separated (arm64, arm, riscv64, ppc64le, s390x …), or all installed emulators")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// emulationInfo is what kiln binfmt and kiln info say about emulation.
type emulationInfo struct {
	// Mounted is false when binfmt_misc is not mounted: no handler can run.
	Mounted bool `json:"binfmtMounted"`
	// Runnable are the platforms a RUN step can execute here.
	Runnable []string         `json:"runnable"`
	Handlers []emulatedRunner `json:"handlers,omitempty"`
	Error    string           `json:"error,omitempty"`
}

type emulatedRunner struct {
	Name        string   `json:"name"`
	Interpreter string   `json:"interpreter"`
	Platforms   []string `json:"platforms"`
	Enabled     bool     `json:"enabled"`
	Fix         bool     `json:"fixBinary"` // the F flag
	// Why is empty for a usable handler, and otherwise says what is wrong
	// and what to do.
	Why string `json:"unusable,omitempty"`
}

func gatherEmulation() emulationInfo {
	var r emulationInfo
	if _, err := os.Stat(filepath.Join(emulate.Dir, "register")); err == nil {
		r.Mounted = true
	}
	hs, err := emulate.Handlers()
	if err != nil {
		r.Error = err.Error()
	}
	r.Runnable, _ = emulate.Runnable()
	for _, h := range hs {
		e := emulatedRunner{Name: h.Name, Interpreter: h.Interpreter, Platforms: h.Platforms, Enabled: h.Enabled, Fix: h.Fix}
		arch := h.Platforms[0] // linux/arm/v7: --platform arm
		if parts := strings.Split(arch, "/"); len(parts) > 1 {
			arch = parts[1]
		}
		switch {
		case !h.Enabled:
			e.Why = "disabled: run `kiln binfmt --install --platform " + arch + "`"
		case !h.Fix:
			e.Why = "registered without the F flag, so its interpreter cannot be found inside RUN's sandbox: run `kiln binfmt --install --platform " + arch + "` to register it again"
		}
		r.Handlers = append(r.Handlers, e)
	}
	return r
}

func printEmulation(w io.Writer, r emulationInfo) {
	fmt.Fprintf(w, "RUN can execute: %s\n", strings.Join(r.Runnable, ", "))
	switch {
	case r.Error != "":
		fmt.Fprintf(w, "QEMU handlers: %s\n", r.Error)
	case !r.Mounted:
		fmt.Fprintln(w, "QEMU handlers: none (binfmt_misc is not mounted): run `apt-get install qemu-user-static && kiln binfmt --install` as root")
	case len(r.Handlers) == 0:
		fmt.Fprintln(w, "QEMU handlers: none: run `apt-get install qemu-user-static && kiln binfmt --install` as root")
	default:
		fmt.Fprintln(w, "QEMU handlers:")
		var rows [][2]string
		for _, h := range r.Handlers {
			state := "usable"
			if h.Why != "" {
				state = "unusable: " + h.Why
			}
			rows = append(rows, [2]string{h.Name, fmt.Sprintf("%s via %s: %s", strings.Join(h.Platforms, " "), h.Interpreter, state)})
		}
		table(w, rows)
	}
}
