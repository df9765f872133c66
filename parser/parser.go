// Package parser turns a Dockerfile into its stages with BuildKit's own
// parser and instruction decoder, and refuses, with the offending line,
// everything kiln cannot build faithfully yet — so nothing is silently
// ignored.
package parser

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Dockerfile is a parsed Dockerfile.
type Dockerfile struct {
	Name     string // as the user named it, for messages
	Source   []byte
	Escape   rune
	Stages   []instructions.Stage
	MetaArgs []instructions.ArgCommand // ARGs before the first FROM
}

// Error is a problem located on Dockerfile lines.
type Error struct {
	File       string
	Start, End int // 1-based lines; 0 when unknown
	Err        error
}

func (e *Error) Error() string {
	if e.Start == 0 {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.File, e.Start, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// At attaches a location to err unless it already carries one.
func At(file string, loc []bkparser.Range, err error) error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) {
		return err
	}
	start, end := span(loc)
	var le *bkparser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 {
		start, end = span(le.Locations[0])
		err = errors.Unwrap(le)
	}
	return &Error{File: file, Start: start, End: end, Err: err}
}

func span(loc []bkparser.Range) (int, int) {
	start, end := 0, 0
	for _, r := range loc {
		if start == 0 || r.Start.Line < start {
			start = r.Start.Line
		}
		if r.End.Line > end {
			end = r.End.Line
		}
	}
	return start, end
}

// Parse parses src. name is used in messages ("Dockerfile").
func Parse(name string, src []byte) (*Dockerfile, error) {
	if len(bytes.TrimSpace(src)) == 0 {
		return nil, &Error{File: name, Err: errors.New("the Dockerfile is empty")}
	}
	if err := checkSyntax(name, src); err != nil {
		return nil, err
	}
	res, err := bkparser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, At(name, nil, err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, At(name, nil, err)
	}
	if len(stages) == 0 {
		return nil, &Error{File: name, Err: errors.New("the Dockerfile has no FROM instruction: nothing to build")}
	}
	for _, st := range stages {
		for _, c := range st.Commands {
			if err := Check(c); err != nil {
				return nil, At(name, c.Location(), err)
			}
		}
	}
	return &Dockerfile{Name: name, Source: src, Escape: res.EscapeToken, Stages: stages, MetaArgs: metaArgs}, nil
}

// checkSyntax accepts only the Dockerfile frontend in a "# syntax=" line:
// kiln is that frontend, and running any other one would mean running an
// arbitrary image with different semantics.
func checkSyntax(name string, src []byte) error {
	ref, _, loc, ok := bkparser.DetectSyntax(src)
	if !ok {
		return nil
	}
	if ok, _ := dockerfileFrontend(ref); ok {
		return nil
	}
	start, end := span(loc)
	return &Error{File: name, Start: start, End: end,
		Err: fmt.Errorf("syntax %q: kiln builds only the Dockerfile frontend (docker/dockerfile); remove the # syntax line or point it at docker/dockerfile:1 (any registry: docker.io/docker/dockerfile, mirror.gcr.io/docker/dockerfile …)", ref)}
}

// Check refuses flags and sources kiln does not implement, naming them.
func Check(c instructions.Command) error {
	unsupported := func(what string) error {
		return fmt.Errorf("%s is not supported by kiln yet; remove it or build this Dockerfile with BuildKit", what)
	}
	switch c := c.(type) {
	case *instructions.RunCommand:
		// --mount values are only decoded when the instruction's words are
		// expanded; the planner refuses the mount types kiln lacks then.
		if len(instructions.GetDevices(c)) > 0 {
			return unsupported("RUN --device")
		}
	case *instructions.CopyCommand:
		for _, s := range c.SourcePaths {
			if isRemote(s) {
				return fmt.Errorf("COPY source %q: COPY takes no URL or git sources; use ADD", s)
			}
		}
	}
	return nil
}

func isRemote(s string) bool {
	for _, p := range []string{"http://", "https://", "git@", "git://", "ssh://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
