package main

import (
	"github.com/kiln-build/kiln/buildctx"
)

// parseBuildContexts reads the --build-context values into the planner's
// named contexts; a later value of the same name wins, as in buildx.
func parseBuildContexts(values []string) (map[string]buildctx.Source, error) {
	if len(values) == 0 {
		return nil, nil
	}
	out := map[string]buildctx.Source{}
	for _, v := range values {
		name, src, err := buildctx.ParseFlag(v)
		if err != nil {
			return nil, &usageError{err}
		}
		out[name] = src
	}
	return out, nil
}
