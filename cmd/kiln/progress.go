package main

import (
	"io"

	"github.com/kiln-build/kiln/progress"
)

// newPrinter makes the progress display --progress asks for.
func newPrinter(mode string, stderr io.Writer) (progress.Printer, error) {
	switch mode {
	case "quiet":
		return progress.Discard, nil
	case "auto", "plain", "tty":
		return progress.NewPlain(stderr), nil
	}
	return nil, usagef("--progress %s: use auto, plain or quiet", mode)
}
