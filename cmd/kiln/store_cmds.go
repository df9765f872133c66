package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/registry"
)

// storeCommands are the commands that look after the store under --root:
// its named images and its disk space.
func storeCommands(root *string) []*cobra.Command {
	return []*cobra.Command{
		newImagesCmd(root), newRmiCmd(root), newSaveCmd(root), newLoadCmd(root),
		newPruneCmd(root), newDuCmd(root), newVerifyCmd(root),
	}
}

// storeOpen opens the store for a command, which must Close it when it is
// done with everything it read from it: the store's lock, which keeps
// prune from deleting what the command uses, is held until then.
func storeOpen(root string) (*cache.Store, error) {
	s, err := cache.Open(root)
	if err != nil {
		return nil, fmt.Errorf("opening kiln's store at %s (set --root or KILN_ROOT): %w", root, err)
	}
	storeConfigure(s)
	return s, nil
}

// storeConfigure sets what the store commands (and kiln serve's image
// endpoints) want of a store they opened, before it is used.
func storeConfigure(s *cache.Store) {
	s.Warn = func(msg string) { fmt.Fprintf(os.Stderr, "kiln: warning: %s\n", msg) }
	s.Detach = detachDurable
	// kiln load unpacks layers too: kiln.toml's bound on one layer holds
	// there as in a build. A broken config file is the build's to report.
	if cfg, err := registry.LoadConfig(registry.ConfigPath()); err == nil {
		s.MaxLayerSize = int64(cfg.Limits.WithDefaults().LayerSize)
	}
}

// afterStoreRead runs once push or save has read its image from the store
// and before it reads the image's blobs: tests force a garbage collection
// there to show that the store's lock does not depend on the Store being
// reachable.
var afterStoreRead = func() {}

func storeNoArgs(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 0 {
			return usagef("%s takes no arguments, got %q", what, args)
		}
		return nil
	}
}

func newImagesCmd(root *string) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List the images in the store",
		Long: `List the images in the store: those built with -t and those loaded with
kiln load. FROM and COPY --from find them before asking any registry.`,
		Args: storeNoArgs("images"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if remoteHost(cmd) != "" {
				return runRemoteImages(cmd, quiet)
			}
			s, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer s.Close()
			entries, err := s.Images()
			if err != nil {
				return err
			}
			rows := make([]imageRow, 0, len(entries))
			for _, e := range entries {
				rows = append(rows, imageRow{name: e.Name, idHex: e.ID.Hex, created: e.Created, size: e.Size})
			}
			return printImages(cmd.OutOrStdout(), rows, quiet)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	return cmd
}

// imageRow is one name of an image, as kiln images lists it; name ""
// is an image without one.
type imageRow struct {
	name    string
	idHex   string
	created time.Time
	size    int64
}

// printImages prints kiln images' table of rows, or with quiet each
// image's short ID once.
func printImages(out io.Writer, rows []imageRow, quiet bool) error {
	if quiet {
		seen := map[string]bool{}
		for _, r := range rows {
			if id := storeShortID(r.idHex); !seen[id] {
				seen[id] = true
				fmt.Fprintln(out, id)
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
	now := time.Now()
	for _, r := range rows {
		repo, tag := "<none>", "<none>"
		if r.name != "" {
			repo, tag = storeSplitTag(cache.FamiliarImageName(r.name))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", repo, tag, storeShortID(r.idHex), storeAgo(now.Sub(r.created)), storeHumanSize(r.size))
	}
	return tw.Flush()
}

func storeShortID(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

// splitTag splits at the tag's colon, not at a registry port's.
func storeSplitTag(n string) (repo, tag string) {
	i := strings.LastIndex(n, ":")
	if i < 0 || strings.Contains(n[i:], "/") {
		return n, ""
	}
	return n[:i], n[i+1:]
}

func storeAgo(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "less than a minute ago"
	case d < time.Hour:
		return storePlural(int(d/time.Minute), "minute") + " ago"
	case d < 48*time.Hour:
		return storePlural(int(d/time.Hour), "hour") + " ago"
	case d < 14*24*time.Hour:
		return storePlural(int(d/(24*time.Hour)), "day") + " ago"
	case d < 60*24*time.Hour:
		return storePlural(int(d/(7*24*time.Hour)), "week") + " ago"
	}
	return storePlural(int(d/(30*24*time.Hour)), "month") + " ago"
}

func storePlural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

// humanSize prints decimal units, as docker images and docker system df do.
func storeHumanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return strconv.FormatFloat(f, 'g', 4, 64) + units[i]
}

func newRmiCmd(root *string) *cobra.Command {
	return &cobra.Command{
		Use:   "rmi NAME...",
		Short: "Remove image names from the store",
		Long: `Remove image names from the store. The layers stay in the build cache until
kiln prune finds that nothing uses them.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("rmi needs at least one image NAME")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer s.Close()
			var errs []error
			for _, a := range args {
				n, err := cache.NormalizeImageName(a)
				if err != nil {
					return usagef("%v", err)
				}
				if err := s.RemoveImage(n); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Untagged: %s\n", cache.FamiliarImageName(n))
			}
			return errors.Join(errs...)
		},
	}
}

func newSaveCmd(root *string) *cobra.Command {
	var dest, format string
	cmd := &cobra.Command{
		Use:   "save NAME -o FILE",
		Short: "Write an image from the store to a docker or OCI archive",
		Example: `  kiln save app:1.0 -o app.tar              # for docker load
  kiln save app:1.0 -o app.tar --format oci`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("save takes exactly one image NAME, got %d", len(args))
			}
			if dest == "" {
				return usagef("save needs -o FILE")
			}
			if format != "docker" && format != "oci" {
				return usagef("--format %s: use docker or oci", format)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer s.Close()
			img, ok, err := s.Image(args[0])
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("saving %s: %w", args[0], cache.ErrImageNotFound)
			}
			afterStoreRead()
			var names []string
			if !strings.Contains(args[0], "@") {
				names = []string{args[0]}
			}
			write := export.DockerArchive
			if format == "oci" {
				write = export.OCIArchive
			}
			if err := write(cmd.Context(), img, dest, names); err != nil {
				return fmt.Errorf("saving %s to %s: %w", args[0], dest, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&dest, "output", "o", "", "archive to write")
	cmd.Flags().StringVar(&format, "format", "docker", "archive format: docker (for docker load) or oci")
	return cmd
}

func newLoadCmd(root *string) *cobra.Command {
	var src string
	cmd := &cobra.Command{
		Use: "load -i FILE",
		Example: `  kiln load -i app.tar
  docker save app:1.0 | kiln load -i -`,
		Short: "Load images from a docker or OCI archive into the store",
		Long: `Load the named images of a docker archive (docker save, kiln save), an OCI
archive or an OCI image layout directory into the store, where FROM and
COPY --from find them.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usagef("load takes no arguments (the archive is -i FILE), got %q", args)
			}
			if src == "" {
				return usagef("load needs -i FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer s.Close()
			path := src
			if src == "-" {
				// The readers need to seek in the archive: spool it in
				// the store's scratch space, on the same disk as the blobs.
				dir, err := s.TempDir("stdin-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				path = filepath.Join(dir, "archive.tar")
				if err := spool(cmd.InOrStdin(), path); err != nil {
					return fmt.Errorf("reading the archive from stdin: %w", err)
				}
			}
			entries, err := s.Load(cmd.Context(), path)
			for _, e := range entries {
				fmt.Fprintf(cmd.OutOrStdout(), "Loaded image: %s\n", cache.FamiliarImageName(e.Name))
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&src, "input", "i", "", "archive (tar) or OCI layout directory to read; - for stdin")
	return cmd
}

func spool(r io.Reader, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPruneCmd(root *string) *cobra.Command {
	var (
		opts        cache.PruneOptions
		keepStorage string
		filters     []string
		noWait      bool
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove build cache that is not used",
		Long: `Remove least recently used build cache from the store. Named images, and
the layers they are made of, are never removed (use kiln rmi first).

Without flags, prune removes layers that no step record uses and debris
(scratch of killed builds, records of lost layers, unused blobs).
  --all                  also every step record, every layer no image uses
                         and every cache mount (RUN --mount=type=cache)
  --filter until=24h     entries (cache mounts too) unused for that long (also 7d)
  --keep-storage 10GB    least recently used first, until the build cache
                         fits (images and kept debug states do not count)

States kept by build --on-error=keep, and the layers under them, stay until
kiln debug --rm BUILD_ID.

A build uses the store while it runs: prune waits for running builds to
finish (or fails at once with --no-wait), and builds started meanwhile wait
for prune.`,
		Example: `  kiln prune --filter until=168h
  kiln prune --keep-storage 20GB
  kiln prune --all`,
		Args: storeNoArgs("prune"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if remoteHost(cmd) != "" {
				return runRemotePrune(cmd, opts.All, keepStorage, filters)
			}
			var err error
			if opts.KeepStorage, opts.Until, err = pruneLimits(keepStorage, filters); err != nil {
				return err
			}
			s, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer s.Close()
			if !noWait {
				opts.Wait = func() {
					fmt.Fprintf(cmd.ErrOrStderr(), "kiln: other kiln processes are using %s; waiting for them to finish (Ctrl-C to give up)\n", s.Root)
				}
			}
			rep, err := s.Prune(cmd.Context(), opts)
			if errors.Is(err, cache.ErrStoreBusy) {
				return fmt.Errorf("%w: nothing was removed; run prune again when the builds using it end, or without --no-wait to wait for them", err)
			}
			if err != nil {
				return err
			}
			verb := "Deleted"
			if opts.DryRun {
				verb = "Would delete"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s %s, %s, %s, %s", verb, storePlural(rep.Steps, "step record"), storePlural(rep.Layers, "layer"), storePlural(rep.Blobs, "blob"), storePlural(rep.CacheMounts, "cache mount"))
			if rep.TmpEntries > 0 {
				fmt.Fprintf(out, ", %s left by killed builds", storePlural(rep.TmpEntries, "scratch entry"))
			}
			if rep.DebugStates > 0 {
				fmt.Fprintf(out, "\nKept: the failed steps of %s for kiln debug, with their layers (kiln debug --rm BUILD_ID discards one; they are under %s)", storePlural(rep.DebugStates, "build"), filepath.Join(s.Root, "debug"))
			}
			fmt.Fprintf(out, "\nTotal reclaimed space: %s (the store now holds %s, of which %s is prunable build cache)\n", storeHumanSize(rep.Reclaimed), storeHumanSize(rep.Remaining), storeHumanSize(rep.RemainingCache))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&opts.All, "all", "a", false, "remove all build cache, not only unreferenced layers")
	fl.StringVar(&keepStorage, "keep-storage", "", "keep this much (e.g. 10GB), least recently used removed first")
	fl.StringArrayVar(&filters, "filter", nil, "until=DURATION: only what was not used for DURATION (24h, 7d)")
	fl.BoolVar(&opts.DryRun, "dry-run", false, "only report what would be removed")
	fl.BoolVar(&noWait, "no-wait", false, "fail at once, instead of waiting, when builds are using the store")
	return cmd
}

// parseAge reads a Go duration, or a number of days ("7d"), which Go's
// parser lacks.
func storeParseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err == nil && n > 0 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a duration such as 24h or 7d")
	}
	return d, nil
}

func newDuCmd(root *string) *cobra.Command {
	return &cobra.Command{
		Use:   "du",
		Short: "Show the disk space the store uses",
		Long: `Show what the store holds and the disk space it takes. RECLAIMABLE is what
kiln prune --all would free: everything no named image uses.`,
		Args: storeNoArgs("du"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := storeOpen(*root)
			if err != nil {
				return err
			}
			defer s.Close()
			du, err := s.DiskUsage()
			if err != nil {
				return err
			}
			storePrintUsage(cmd.OutOrStdout(), s.Root, du)
			return nil
		},
	}
}

func storePrintUsage(w io.Writer, root string, du cache.DiskUsage) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "TYPE\tCOUNT\tSIZE\tRECLAIMABLE\n")
	for _, r := range []struct {
		what string
		u    cache.Usage
	}{
		{"layers (unpacked)", du.Layers},
		{"blobs", du.Blobs},
		{"step records", du.Steps},
		{"images", du.Images},
		{"cache mounts", du.CacheMounts},
		{"kept for kiln debug", du.Debug},
		{"scratch", du.Tmp},
		{"other (logs, context hashes)", du.Other},
		{"total", du.Total},
	} {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.what, r.u.Count, storeHumanSize(r.u.Size), storeHumanSize(r.u.Reclaimable))
	}
	tw.Flush()
	fmt.Fprintf(w, "store: %s\n", root)
}

// pruneLimits reads kiln prune's --keep-storage and --filter until=,
// locally and with --host alike.
func pruneLimits(keepStorage string, filters []string) (keep int64, until time.Duration, err error) {
	if keepStorage != "" {
		if keep, err = parseSize(keepStorage); err != nil {
			return 0, 0, usagef("--keep-storage %s: %v", keepStorage, err)
		}
	}
	for _, f := range filters {
		k, v, _ := strings.Cut(f, "=")
		if k != "until" {
			return 0, 0, usagef("--filter %s: the only filter is until=DURATION", f)
		}
		if until, err = storeParseAge(v); err != nil {
			return 0, 0, usagef("--filter %s: %v", f, err)
		}
	}
	return keep, until, nil
}
