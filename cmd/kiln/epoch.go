package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kiln-build/kiln/export"
)

// propagateSourceDateEpoch passes a SOURCE_DATE_EPOCH of kiln's environment
// to the build as the build arg of that name, as buildx does; an explicit
// --build-arg SOURCE_DATE_EPOCH wins.
func propagateSourceDateEpoch(buildArgs map[string]string) {
	if _, ok := buildArgs["SOURCE_DATE_EPOCH"]; ok {
		return
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		buildArgs["SOURCE_DATE_EPOCH"] = v
	}
}

// keepTimestamps reads rewrite-timestamp= of the outputs: true when one
// says false. The layers are written once per build, during the build, so
// outputs that disagree are refused rather than one of them silently
// getting the other's layers.
func keepTimestamps(outputs []export.Output) (bool, error) {
	var seen *bool
	for _, out := range outputs {
		on, set, err := export.RewriteTimestamp(out)
		if err != nil {
			return false, usagef("%v", err)
		}
		if !set {
			continue
		}
		if seen != nil && *seen != on {
			return false, usagef("the outputs disagree on rewrite-timestamp: a build writes its layers once; give the same value to every output (or build twice)")
		}
		seen = &on
	}
	return seen != nil && !*seen, nil
}

// warnRewriteWithoutEpoch says, as BuildKit does, that rewrite-timestamp=true
// did nothing because the build had no SOURCE_DATE_EPOCH.
func warnRewriteWithoutEpoch(w io.Writer, outputs []export.Output, epoch *time.Time) {
	if epoch != nil {
		return
	}
	for _, out := range outputs {
		if on, _, _ := export.RewriteTimestamp(out); on {
			fmt.Fprintln(w, "WARNING: rewrite-timestamp=true does nothing without SOURCE_DATE_EPOCH: set it with --build-arg SOURCE_DATE_EPOCH=SECONDS or in the environment")
			return
		}
	}
}
