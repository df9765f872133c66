package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/kiln-build/kiln/serve"
)

// serveBuilds runs one POST /build at a time: runBuild and printError
// share package state (dockerfileSource, activeDisplay) that concurrent
// builds would race on. Lifting this is the concurrency work of issue 13.
var serveBuilds sync.Mutex

// serveBuilder runs POST /build as `kiln build` of the unpacked context:
// the same command, its flags made from the request, its plain progress
// written to the client's stream.
func serveBuilder(root *string, allow []string) serve.Builder {
	return func(ctx context.Context, req serve.BuildRequest, progress io.Writer) (string, error) {
		serveBuilds.Lock()
		defer serveBuilds.Unlock()
		if err := ctx.Err(); err != nil {
			return "", err // the client left while waiting its turn
		}
		ctx = withRequestKeychain(ctx, req.Keychain) // the client's X-Registry-Config, for FROM (serveregistry.go)
		iid := filepath.Join(filepath.Dir(req.ContextDir), "iid")
		args := []string{"--progress=plain", "--iidfile", iid, "-f", req.Dockerfile, "--network", req.Network}
		for _, t := range req.Tags {
			args = append(args, "-t", t)
		}
		for _, k := range sortedKeys(req.BuildArgs) {
			args = append(args, "--build-arg", k+"="+req.BuildArgs[k])
		}
		for _, k := range sortedKeys(req.Labels) {
			args = append(args, "--label", k+"="+req.Labels[k])
		}
		if req.Target != "" {
			args = append(args, "--target", req.Target)
		}
		if req.Platform != "" {
			args = append(args, "--platform", req.Platform)
		}
		if req.NoCache {
			args = append(args, "--no-cache")
		}
		if req.Pull {
			args = append(args, "--pull")
		}
		for _, a := range allow {
			args = append(args, "--allow", a)
		}
		cmd := newBuildCmd(root)
		cmd.SetArgs(append(args, "--", req.ContextDir))
		cmd.SetOut(progress)
		cmd.SetErr(progress)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		if err := cmd.ExecuteContext(ctx); err != nil {
			if ctx.Err() == nil {
				// what kiln build prints: the step's output, the
				// Dockerfile excerpt, the hints
				printError(progress, err)
			}
			return "", err
		}
		id, err := os.ReadFile(iid)
		if err != nil {
			return "", fmt.Errorf("reading the built image's ID: %w", err)
		}
		return strings.TrimSpace(string(id)), nil
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
