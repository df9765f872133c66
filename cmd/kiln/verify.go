package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/cache"
)

func newVerifyCmd(root *string) *cobra.Command {
	var opts cache.VerifyOptions
	var noWait bool
	cmd := &cobra.Command{
		Use:   "verify [--repair]",
		Short: "Check the store for damage, and with --repair remove what is damaged",
		Long: `Check everything in the store: every blob is read again and must match its
digest, every unpacked layer must match the list of files (paths, types,
modes, owners, sizes) recorded when it was stored, and every image and step
record must be readable. Layers stored by an older kiln have no such list:
their blob is checked, and they are named as unchecked.

Without --repair, verify changes nothing and exits 1 when it finds a
problem. With --repair it removes the damaged blobs and layers, the step
records that use them and unreadable records, so that the next build fetches
or rebuilds them; like prune, it waits for running builds first. Image names
are kept: an image whose blob was removed must be built, pulled or loaded
again (kiln rmi removes the name).

verify reads the whole store: expect about a second per GB of blobs.`,
		Example: `  kiln verify
  kiln verify --repair`,
		Args: storeNoArgs("verify"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer s.Close()
			if opts.Repair && !noWait {
				opts.Wait = func() {
					fmt.Fprintf(cmd.ErrOrStderr(), "kiln: other kiln processes are using %s; waiting for them to finish (Ctrl-C to give up)\n", s.Root)
				}
			}
			rep, err := s.Verify(cmd.Context(), opts)
			if errors.Is(err, cache.ErrStoreBusy) {
				return fmt.Errorf("%w: nothing was checked; run verify --repair again when the builds using it end, or without --no-wait to wait for them", err)
			}
			if err != nil {
				return err
			}
			unrepaired := printVerify(cmd.OutOrStdout(), rep, opts.Repair)
			repairable := 0
			for _, p := range rep.Problems {
				if p.Repairable {
					repairable++
				}
			}
			const imagesHint = "build, pull or load the images named above again, or remove their names with kiln rmi"
			switch {
			case len(rep.Problems) == 0:
				return nil
			case !opts.Repair && repairable > 0:
				return fmt.Errorf("the store at %s has %s; kiln verify --repair removes what is damaged, and the next build fetches or rebuilds it", s.Root, storePlural(len(rep.Problems), "problem"))
			case !opts.Repair:
				return fmt.Errorf("the store at %s has %s: %s", s.Root, storePlural(len(rep.Problems), "problem"), imagesHint)
			case unrepaired > 0:
				return fmt.Errorf("%s left that the store cannot repair: %s", storePlural(unrepaired, "problem"), imagesHint)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&opts.Repair, "repair", false, "remove what is damaged, so that the next build fetches or rebuilds it")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "with --repair, fail at once instead of waiting when builds are using the store")
	return cmd
}

// printVerify lists the problems and a summary; it returns how many
// problems were left unrepaired.
func printVerify(w io.Writer, rep cache.VerifyReport, repair bool) int {
	unrepaired := 0
	for _, p := range rep.Problems {
		line := fmt.Sprintf("%s %s: %s", p.Kind, p.Name, p.What)
		if len(p.Images) > 0 && p.Kind != "image" {
			line += " (used by " + strings.Join(p.Images, ", ") + ")"
		}
		switch {
		case p.Repaired:
			line += ": removed"
		case repair:
			unrepaired++
		}
		fmt.Fprintln(w, line)
		for _, d := range p.Details {
			fmt.Fprintf(w, "    %s\n", d)
		}
	}
	for _, l := range rep.Unchecked {
		fmt.Fprintf(w, "layer %s: unchecked, stored by an older kiln without a list of its files\n", l)
	}
	fmt.Fprintf(w, "checked %s, %s, %s, %s: ", storePlural(rep.Blobs, "blob"), storePlural(rep.Layers, "layer"),
		storePlural(rep.Images, "image"), storePlural(rep.Steps, "step record"))
	if len(rep.Problems) == 0 {
		fmt.Fprintln(w, "no problems")
		return 0
	}
	fmt.Fprint(w, storePlural(len(rep.Problems), "problem"))
	defer func() {
		// names kept for images whose blobs are gone now
		var broken []string
		seen := map[string]bool{}
		for _, p := range rep.Problems {
			if p.Kind == "blob" && p.Repaired {
				for _, n := range p.Images {
					if !seen[n] {
						seen[n] = true
						broken = append(broken, n)
					}
				}
			}
		}
		if len(broken) > 0 {
			fmt.Fprintf(w, "build, pull or load again (or kiln rmi): %s\n", strings.Join(broken, ", "))
		}
	}()
	if rep.RemovedSteps > 0 {
		verb := "would also remove"
		if repair {
			verb = "also removed"
		}
		fmt.Fprintf(w, "; %s %s that use damaged layers", verb, storePlural(rep.RemovedSteps, "step record"))
	}
	fmt.Fprintln(w)
	return unrepaired
}
