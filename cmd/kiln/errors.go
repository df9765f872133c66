package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/planner"
)

// dockerfileSource lets error reports quote the Dockerfile.
var dockerfileSource []byte

// printError reports a build failure like BuildKit: the Dockerfile excerpt
// with the failing line marked, the step's last output lines, the error.
func printError(w io.Writer, err error) {
	var pe *parser.Error
	if errors.As(err, &pe) && pe.Start > 0 && dockerfileSource != nil {
		lines := strings.Split(string(bytes.TrimRight(dockerfileSource, "\n")), "\n")
		end := pe.End
		if end < pe.Start {
			end = pe.Start
		}
		fmt.Fprintf(w, "%s:%d\n--------------------\n", pe.File, pe.Start)
		from := max(1, pe.Start-2)
		to := min(len(lines), end+2)
		for i := from; i <= to; i++ {
			mark := "    "
			if i >= pe.Start && i <= end {
				mark = ">>> "
			}
			fmt.Fprintf(w, " %3d | %s%s\n", i, mark, lines[i-1])
		}
		fmt.Fprintln(w, "--------------------")
	}
	var re *planner.RunError
	if errors.As(err, &re) && len(re.Tail) > 0 {
		fmt.Fprintln(w, "last output lines:")
		for _, l := range re.Tail {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	fmt.Fprintf(w, "ERROR: %v\n", err)
}
