package main

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/progress"
)

// TestPrintError renders failure reports from errors made here, against
// testdata/progress/report/CASE.golden; TestErrorReports does the same
// from real builds.
func TestPrintError(t *testing.T) {
	df := []byte("FROM busybox AS build\nRUN make\nCOPY --from=build /out /out\nCOPY app.conf /etc/\nRUN \\\n  ./configure && \\\n  make install\n")
	at := func(start, end int, err error) error {
		return &parser.Error{File: "Dockerfile", Start: start, End: end, Err: err}
	}
	tail := make([]string, 0, 20)
	for i := 81; i <= 100; i++ {
		tail = append(tail, fmt.Sprintf("line %d", i))
	}
	runErr := &planner.RunError{Command: "/bin/sh -c make", Code: 2, Tail: tail}
	tests := []struct {
		name string
		err  error
		step bool // the error is that of a step of the display
	}{
		{"run", at(2, 2, runErr), true},
		{"run-multiline", at(5, 7, &planner.RunError{Command: "/bin/sh -c ./configure && make install", Code: 1, Tail: []string{"configure: error: no C compiler"}}), true},
		{"dockerignored", at(4, 4, fmt.Errorf("copy from the build context: %w", &copier.NotFoundError{Path: "app.conf", ExcludedBy: "*.conf"})), true},
		{"missing", at(4, 4, &copier.NotFoundError{Path: "app.conf"}), true},
		{"first-line", at(1, 1, errors.New("base image not found")), false},
		{"line-out-of-range", at(40, 40, errors.New("odd")), false},
		{"no-line", errors.New("exporting oci to out.tar: disk full"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := t.TempDir()
			d, err := progress.New(progress.Config{Mode: "quiet", LogsDir: logs})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			s := d.Step("[2/4] RUN make")
			if tt.step {
				var pe *parser.Error
				errors.As(tt.err, &pe)
				s.Fail(pe.Err)
			}
			var b bytes.Buffer
			printError(&b, &buildError{err: tt.err, dockerfile: df, display: d})
			n := normalizer{root: logs, reg: "\x00", ctx: "\x00"}
			compareGolden(t, filepath.Join("testdata", "progress", "report", tt.name+".golden"), n.text(b.String()))
		})
	}
}
