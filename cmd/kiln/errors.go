package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/progress"
)

// buildError is a build's error with what its report quotes: the
// Dockerfile and the build's display. It travels with the error rather
// than in package state so that builds running at once in one process
// (kiln serve) each report their own.
type buildError struct {
	err        error
	dockerfile []byte
	display    *progress.Display
}

func (e *buildError) Error() string { return e.err.Error() }
func (e *buildError) Unwrap() error { return e.err }

// printError reports a build failure like BuildKit: a failing RUN's last
// output lines under its step's name, the Dockerfile excerpt with the
// failing line marked, the error, a hint when kiln knows the usual cause,
// and where the complete output of the build is kept.
func printError(w io.Writer, err error) {
	var b strings.Builder
	var src []byte
	var display *progress.Display
	if be := (*buildError)(nil); errors.As(err, &be) {
		src, display = be.dockerfile, be.display
	}
	var re *planner.RunError
	if errors.As(err, &re) && len(re.Tail) > 0 {
		b.WriteString("------\n")
		if name := display.StepName(err); name != "" {
			fmt.Fprintf(&b, " > %s:\n", name)
		}
		for _, l := range re.Tail {
			b.WriteString(l + "\n")
		}
		b.WriteString("------\n")
	}
	excerpt(&b, src, err)
	fmt.Fprintf(&b, "ERROR: %v\n", err)
	for _, h := range hints(err) {
		fmt.Fprintf(&b, "hint: %s\n", h)
	}
	// a RUN's output is worth reading whole; for other failures the
	// build's transcript is what there is to see
	if p := display.StepLog(err); re != nil && p != "" {
		fmt.Fprintf(&b, "the step's complete output: %s\n", p)
	} else if display != nil && display.LogDir != "" {
		fmt.Fprintf(&b, "the build's logs: %s\n", display.LogDir)
	}
	if re != nil && re.Kept != "" {
		id := filepath.Base(filepath.Dir(re.Kept))
		fmt.Fprintf(&b, "the failed step's filesystem is kept: open a shell in it with\n    kiln debug %s\n(kiln debug --rm %s discards it)\n", id, id)
	} else if re != nil && re.KeepErr != nil {
		fmt.Fprintf(&b, "the failed step could not be kept: %v\n", re.KeepErr)
	}
	// one write: with parallel stages, nothing else can cut the report
	io.WriteString(w, b.String())
}

// excerpt writes BuildKit's "Dockerfile:7" block: the failing lines
// marked with >>>, two lines of context either side.
func excerpt(w io.Writer, src []byte, err error) {
	var pe *parser.Error
	if !errors.As(err, &pe) || pe.Start <= 0 || src == nil {
		return
	}
	lines := strings.Split(string(bytes.TrimRight(src, "\n")), "\n")
	if pe.Start > len(lines) {
		return
	}
	end := min(max(pe.End, pe.Start), len(lines))
	fmt.Fprintf(w, "%s:%d\n--------------------\n", pe.File, pe.Start)
	for i := max(1, pe.Start-2); i <= min(len(lines), end+2); i++ {
		mark := "    "
		if i >= pe.Start && i <= end {
			mark = ">>> "
		}
		fmt.Fprintf(w, " %3d | %s%s\n", i, mark, lines[i-1])
	}
	fmt.Fprintln(w, "--------------------")
}

// hints says what usually causes err, when kiln can tell.
func hints(err error) []string {
	var out []string
	var nf *copier.NotFoundError
	if errors.As(err, &nf) {
		if nf.ExcludedBy != "" {
			out = append(out, fmt.Sprintf("%q is in the build context, but the .dockerignore rule %q excludes it: remove the rule, or add %q after it",
				nf.Path, nf.ExcludedBy, "!"+nf.Path))
		} else {
			out = append(out, fmt.Sprintf("sources are looked up in the build context, or from the root of the --from stage or image: nothing is at %q there", nf.Path))
		}
	}
	return out
}
