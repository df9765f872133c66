package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-build/kiln/progress"
)

// openProgress makes the display --progress asks for, keeping every
// step's complete output under root/logs (nothing is kept when root is
// ""). The caller ends it with progress.Summarize on success and
// progress.Close in every case.
func openProgress(mode string, stderr io.Writer, root string) (*progress.Display, error) {
	if mode == "auto" {
		mode = autoMode(stderr)
	}
	if err := checkProgress(mode); err != nil {
		return nil, err
	}
	cfg := progress.Config{Mode: mode, Out: stderr}
	if f, ok := stderr.(*os.File); ok {
		cfg.TTY.Size = func() (int, int) { return progress.TerminalSize(f) }
	}
	// https://no-color.org
	cfg.TTY.Color = os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
	if root != "" {
		cfg.LogsDir = filepath.Join(root, "logs")
	}
	return progress.New(cfg)
}

// autoMode is tty on a terminal that can move its cursor, plain elsewhere
// (CI logs, pipes, files). KILN_PROGRESS overrides it, as
// BUILDKIT_PROGRESS does for buildx.
func autoMode(stderr io.Writer) string {
	if m := os.Getenv("KILN_PROGRESS"); m != "" && m != "auto" {
		return m
	}
	if f, ok := stderr.(*os.File); ok && progress.IsTerminal(f) && os.Getenv("TERM") != "dumb" {
		return "tty"
	}
	return "plain"
}

// checkProgress refuses a --progress value early, before any work.
func checkProgress(mode string) error {
	if mode == "auto" || slices.Contains(progress.Modes, mode) {
		return nil
	}
	return usagef("--progress %s: use auto, %s", mode, strings.Join(progress.Modes, ", "))
}
