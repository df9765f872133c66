package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/inflight"
	"github.com/kiln-build/kiln/serve"
)

// serveBuildFlags are kiln serve's flags for POST /build.
type serveBuildFlags struct {
	maxConcurrent   int
	shutdownTimeout time.Duration
	events          string
}

func addServeBuildFlags(f *pflag.FlagSet) *serveBuildFlags {
	sf := &serveBuildFlags{}
	f.IntVar(&sf.maxConcurrent, "max-concurrent-builds", serve.DefaultMaxConcurrentBuilds(), "builds that run at once; more wait for a turn")
	f.DurationVar(&sf.shutdownTimeout, "shutdown-timeout", serve.DefaultShutdownTimeout, "on SIGTERM or SIGINT, how long builds in flight may finish before they are cancelled; 0 cancels them at once")
	f.StringVar(&sf.events, "events", "", "append a JSON line to this file for each step of each build: ran, cached, or shared (another build ran it at the same time)")
	return sf
}

// setup applies the flags to srv, whose builds run through builder. The
// returned function closes the events file.
func (sf *serveBuildFlags) setup(srv *serve.Server, opts serve.BuildOptions, root *string, allow []string) (func(), error) {
	if sf.maxConcurrent < 1 {
		return nil, usagef("--max-concurrent-builds %d: want 1 or more", sf.maxConcurrent)
	}
	if sf.shutdownTimeout < 0 {
		return nil, usagef("--shutdown-timeout %s: want 0 or more, e.g. 60s", sf.shutdownTimeout)
	}
	shared := &inflight.Table{}
	closeEvents := func() {}
	if sf.events != "" {
		f, err := os.OpenFile(sf.events, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, usagef("--events: %v (name a writable file)", err)
		}
		enc := json.NewEncoder(f)
		// one write per event (Encode writes the line at once): a reader
		// never sees half a line
		shared.Events = func(e inflight.Event) { enc.Encode(e) }
		closeEvents = func() { f.Close() }
	}
	opts.MaxConcurrent = sf.maxConcurrent
	srv.SetBuilder(serveBuilder(root, allow, shared), opts)
	srv.SetShutdownTimeout(sf.shutdownTimeout)
	return closeEvents, nil
}

// sharedKey is the context key of the step table of kiln serve's builds.
type sharedKey struct{}

// sharedSteps is the table of steps shared by the builds of this process,
// when ctx is a build of kiln serve's.
func sharedSteps(ctx context.Context) *inflight.Table {
	t, _ := ctx.Value(sharedKey{}).(*inflight.Table)
	return t
}

// serveBuilder runs POST /build as `kiln build` of the unpacked context:
// the same command, its flags made from the request, its plain progress
// written to the client's stream. Builds run at once, sharing the steps
// they have in common through shared.
func serveBuilder(root *string, allow []string, shared *inflight.Table) serve.Builder {
	return func(ctx context.Context, req serve.BuildRequest, progress io.Writer) (string, error) {
		ctx = context.WithValue(ctx, sharedKey{}, shared)
		ctx = withRequestKeychain(ctx, req.Keychain) // the client's X-Registry-Config, for FROM (serveregistry.go)
		iid := filepath.Join(filepath.Dir(req.ContextDir), "iid")
		args := []string{"--progress=plain", "--iidfile", iid, "-f", req.Dockerfile, "--network", req.Network}
		for _, t := range req.Tags {
			args = append(args, "-t", t)
		}
		if len(req.Tags) == 0 {
			// kept under a hidden name, so that the client finds it by
			// ID (serveimages.go); its "named" line is not shown
			hidden := untaggedName()
			args = append(args, "-t", hidden)
			progress = &dropLines{w: progress, drop: "named " + hidden}
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
		args = append(args, resourceArgs(req)...)
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

// resourceArgs are kiln build's flags for the request's RUN resources,
// shm size, extra hosts and cache sources.
func resourceArgs(req serve.BuildRequest) []string {
	var args []string
	if req.Memory > 0 {
		args = append(args, "--memory", strconv.FormatInt(req.Memory, 10))
	}
	if req.MemorySwap != 0 {
		args = append(args, "--memory-swap", strconv.FormatInt(req.MemorySwap, 10))
	}
	if req.CPUShares > 0 {
		args = append(args, "--cpu-shares", strconv.FormatInt(req.CPUShares, 10))
	}
	if req.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(req.CPUs, 'f', -1, 64))
	}
	if req.ShmSize > 0 {
		args = append(args, "--shm-size", strconv.FormatInt(req.ShmSize, 10))
	}
	for _, h := range req.ExtraHosts {
		args = append(args, "--add-host", h)
	}
	for _, ref := range req.CacheFrom {
		args = append(args, "--cache-from", ref)
	}
	return args
}

// dropLines passes what is written to w but the lines holding drop.
type dropLines struct {
	w       io.Writer
	drop    string
	partial []byte
}

func (d *dropLines) Write(p []byte) (int, error) {
	d.partial = append(d.partial, p...)
	for {
		i := bytes.IndexByte(d.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := d.partial[:i+1]
		if !bytes.Contains(line, []byte(d.drop)) {
			if _, err := d.w.Write(line); err != nil {
				return len(p), err
			}
		}
		d.partial = d.partial[i+1:]
	}
}
