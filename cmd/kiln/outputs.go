package main

import (
	"context"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/progress"
)

// annotateFlagHelp is the help of --annotation.
const annotateFlagHelp = "add an annotation to the image: KEY=VALUE (on the manifest), or TYPE[PLATFORM]:KEY=VALUE with TYPE manifest, index, manifest-descriptor or index-descriptor (comma-separated; repeatable)"

// outputTargets are what the outputs need beyond their specs: the stream
// of the one written to stdout, and the Docker engine of --load.
type outputTargets struct {
	engine *export.Engine
	// toStdout: an output writes to stdout, which then carries nothing
	// else (the image ID of --quiet goes to stderr).
	toStdout bool
	// annotations holds the --annotation values as output options, for
	// the push of --push.
	annotations export.Output
}

// prepareOutputs adds --load's output, hands stdout to the output that
// writes there, refusing a terminal as buildx does, and finds the Docker
// engine before the build rather than after it.
func prepareOutputs(ctx context.Context, outs []export.Output, load bool, annotations []string, stdout io.Writer) ([]export.Output, outputTargets, error) {
	var t outputTargets
	if load {
		outs = append(outs, export.Output{Type: "docker", Attrs: map[string]string{}})
	}
	anns, err := export.ParseAnnotationFlags(annotations)
	if err != nil {
		return nil, t, usagef("--annotation %v", err)
	}
	t.annotations = export.Output{Type: "registry", Attrs: map[string]string{}}
	for _, a := range anns {
		t.annotations.Attrs[a.AttrKey()] = a.Value
		// As buildx: every image output gets them, its own options first.
		for i := range outs {
			switch outs[i].Type {
			case "oci", "docker", "registry":
				if _, set := outs[i].Attrs[a.AttrKey()]; !set {
					outs[i].Attrs[a.AttrKey()] = a.Value
				}
			}
		}
	}
	loads := 0
	for i := range outs {
		out := &outs[i]
		switch {
		case out.Dest == export.StdoutDest:
			if t.toStdout {
				return nil, t, usagef("-o: only one output can write to stdout")
			}
			if f, ok := stdout.(*os.File); ok && progress.IsTerminal(f) {
				return nil, t, usagef("-o type=%s to stdout: refusing to write an archive to a terminal; redirect stdout to a file or pipe, or give dest=FILE", out.Type)
			}
			t.toStdout = true
			out.Stdout = stdout
		case out.Type == "docker" && out.Dest == "":
			loads++
		}
	}
	if loads > 1 {
		return nil, t, usagef("--load and -o type=docker without dest= both load the image: give one")
	}
	if loads == 1 {
		e, err := export.DockerEngine(ctx)
		if err != nil {
			return nil, t, fmt.Errorf("--load (or -o type=docker without dest=): %w", err)
		}
		t.engine = e
	}
	return outs, t, nil
}

// writeOutput writes one output: loaded into the Docker engine, or
// written by package export.
func (t outputTargets) writeOutput(ctx context.Context, img v1.Image, out export.Output, names []string) error {
	if out.Type == "docker" && out.Dest == "" {
		return t.engine.Load(ctx, img, names)
	}
	return export.Write(ctx, img, out, names)
}

// idWriter is where --quiet prints the image ID: stdout, unless an
// output writes there.
func (t outputTargets) idWriter(stdout, stderr io.Writer) io.Writer {
	if t.toStdout {
		return stderr
	}
	return stdout
}

// stepName is the progress line of an output.
func (t outputTargets) stepName(out export.Output) string {
	switch {
	case out.Type == "docker" && out.Dest == "":
		return "loading into the Docker engine at " + t.engine.Host
	case out.Dest == export.StdoutDest:
		return fmt.Sprintf("exporting to %s on stdout", out.Type)
	}
	return fmt.Sprintf("exporting to %s %s", out.Type, out.Dest)
}

// exportError says which output failed; a load's error already names the
// engine.
func exportError(out export.Output, err error) error {
	switch {
	case out.Type == "docker" && out.Dest == "":
		return err
	case out.Dest == export.StdoutDest:
		return fmt.Errorf("exporting %s to stdout: %w", out.Type, err)
	}
	return fmt.Errorf("exporting %s to %s: %w", out.Type, out.Dest, err)
}
