package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/client"
	"github.com/kiln-build/kiln/progress"
)

// remoteBuildFlags are the kiln build flags POST /build carries.
var remoteBuildFlags = []string{
	"file", "tag", "build-arg", "target", "no-cache", "pull", "label", "network", "platform",
	"iidfile", "progress", "quiet", "memory", "memory-swap", "cpu-shares", "cpus", "shm-size",
	"add-host", "cache-from",
}

// runRemoteBuild is kiln build with --host: the context goes to the
// server as POST /build, and its answer is shown as kiln build shows a
// build.
func runRemoteBuild(cmd *cobra.Command, contextArg string, f buildFlags) error {
	ctx := cmd.Context()
	if err := refuseFlags(cmd, remoteBuildFlags...); err != nil {
		return err
	}
	opts, err := remoteBuildOptions(cmd, f)
	if err != nil {
		return err
	}
	if f.quiet {
		f.progress = "quiet"
	}
	if err := checkProgress(f.progress); err != nil {
		return err
	}
	c, err := newRemoteClient(cmd)
	if err != nil {
		return err
	}
	rc, err := prepareRemoteContext(ctx, contextArg, f.file, cmd.InOrStdin())
	if err != nil {
		return err
	}
	defer rc.body.Close()
	opts.Dockerfile = rc.dockerfile
	opts.Quiet = f.progress == "quiet"
	opts.RegistryConfig = pullCredentials(cmd.ErrOrStderr())

	printer, err := openProgress(f.progress, cmd.ErrOrStderr(), "")
	if err != nil {
		return err
	}
	defer progress.Close(printer)
	st, err := c.Build(ctx, rc.body, opts)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return remoteErr(c, "building", err)
	}
	defer st.Close()
	r := newRemoteRender(printer)
	id, err := r.run(st)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *client.StreamError
		if errors.As(err, &se) {
			// the report (step output, Dockerfile excerpt, ERROR: line)
			// came as the stream's text; say the error only if it did not
			progress.Close(printer) // the live view ends before the report
			if !r.saidError(se.Message) {
				fmt.Fprintf(cmd.ErrOrStderr(), "ERROR: %s\n", se.Message)
			}
			return &exitStatus{code: exitFailed}
		}
		return fmt.Errorf("building on %s: %w", c.Host(), err)
	}
	if f.iidfile != "" {
		if err := os.WriteFile(f.iidfile, []byte(id), 0o644); err != nil {
			return fmt.Errorf("writing --iidfile: %w", err)
		}
	}
	if f.progress == "quiet" {
		fmt.Fprintln(cmd.OutOrStdout(), id)
	}
	sum := r.summary
	sum.ImageID, sum.Names = id, f.tags
	progress.Summarize(printer, sum)
	return nil
}

// remoteBuildOptions maps kiln build's flags to POST /build's query.
func remoteBuildOptions(cmd *cobra.Command, f buildFlags) (client.BuildOptions, error) {
	o := client.BuildOptions{Tags: f.tags, Target: f.target, NoCache: f.noCache, Pull: f.pull, Platform: f.platform}
	fl := cmd.Flags()
	if fl.Changed("network") {
		o.NetworkMode = f.network
	}
	args, err := parseBuildArgs(f.buildArgs)
	if err != nil {
		return o, err
	}
	if len(args) > 0 {
		o.BuildArgs = map[string]*string{}
		for k, v := range args {
			o.BuildArgs[k] = &v
		}
	}
	for _, l := range f.labels {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return o, usagef("--label %q: want KEY=VALUE", l)
		}
		if o.Labels == nil {
			o.Labels = map[string]string{}
		}
		o.Labels[k] = v
	}
	size := func(name string) (int64, error) {
		v, _ := fl.GetString(name)
		if v == "" {
			return 0, nil
		}
		if name == "memory-swap" && v == "-1" {
			return -1, nil
		}
		n, err := parseSize(v)
		if err != nil {
			return 0, usagef("--%s %s: %v", name, v, err)
		}
		return n, nil
	}
	if o.Memory, err = size("memory"); err != nil {
		return o, err
	}
	if o.MemorySwap, err = size("memory-swap"); err != nil {
		return o, err
	}
	if o.ShmSize, err = size("shm-size"); err != nil {
		return o, err
	}
	if shares, _ := fl.GetUint64("cpu-shares"); shares > 0 {
		o.CPUShares = int64(shares)
	}
	if v, _ := fl.GetString("cpus"); v != "" {
		cpus, err := strconv.ParseFloat(v, 64)
		if err != nil || cpus <= 0 || cpus > 1e6 {
			return o, usagef("--cpus %s: want a number of cores, e.g. 1.5", v)
		}
		// docker's --cpus as the CFS quota of a 100ms period
		o.CPUPeriod, o.CPUQuota = 100000, int64(cpus*100000)
	}
	o.ExtraHosts, _ = fl.GetStringArray("add-host")
	from, err := parseCacheFrom(f.cache.from)
	if err != nil {
		return o, err
	}
	for _, s := range from {
		if s.Type != "registry" {
			return o, usagef("--cache-from type=%s: with --host only registry caches (an image reference) are sent; the server cannot read a local directory", s.Type)
		}
		o.CacheFrom = append(o.CacheFrom, s.Ref)
	}
	return o, nil
}

// remoteRender shows a build's message stream on a local display. The
// server's stream text is kiln build's plain progress (BuildKit's
// "#N …" lines): read back into steps, their output, transfers and
// outcomes, it is drawn by whichever display --progress asked for.
type remoteRender struct {
	p       *progress.Display
	steps   map[int]progress.Step
	msgs    io.Writer
	summary progress.Summary
	inSum   bool   // within the server's summary block
	blank   bool   // a blank line held back: the summary's, or a message's
	partial string // stream text after its last newline
	errors  []string
}

func newRemoteRender(p *progress.Display) *remoteRender {
	return &remoteRender{p: p, steps: map[int]progress.Step{}, msgs: p.Messages()}
}

// messageStream is a JSON message stream: a *client.Stream.
type messageStream interface {
	Next() (client.Message, error)
}

// run reads the stream to its end and returns the image ID.
func (r *remoteRender) run(st messageStream) (string, error) {
	var id string
	for {
		m, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.end()
			r.cancelSteps()
			return "", err
		}
		if m.Stream != "" {
			r.text(m.Stream)
		}
		if m.Status != "" {
			// a classic builder's pull progress: a line of its own
			r.line(strings.TrimSpace(m.ID + " " + m.Status + " " + m.Progress))
		}
		if len(m.Aux) > 0 {
			var aux client.BuildAux
			if json.Unmarshal(m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		}
		if err := m.Err(); err != nil {
			r.end()
			r.cancelSteps()
			return "", err
		}
	}
	r.end()
	if id == "" {
		r.cancelSteps()
		return "", errors.New("the server ended the build without an image ID (was it stopped?)")
	}
	return id, nil
}

func (r *remoteRender) text(s string) {
	s = r.partial + s
	lines := strings.Split(s, "\n")
	r.partial = lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		r.line(strings.TrimSuffix(l, "\r"))
	}
}

// end shows a last line without its newline.
func (r *remoteRender) end() {
	if r.partial != "" {
		r.line(r.partial)
		r.partial = ""
	}
}

// cancelSteps ends the steps still running when the stream ended.
func (r *remoteRender) cancelSteps() {
	for _, s := range r.steps {
		s.Fail(context.Canceled)
	}
}

var (
	remoteStepLine     = regexp.MustCompile(`^#([0-9]+) (.*)$`)
	remoteOutputLine   = regexp.MustCompile(`^[0-9]+\.[0-9]{3}(?: (.*))?$`)
	remoteDoneLine     = regexp.MustCompile(`^DONE [0-9.]+s$`)
	remoteHumanSize    = `[0-9]+(?:\.[0-9])?(?:B|kB|MB|GB|TB|PB)`
	remoteTransferLine = regexp.MustCompile(`^(\S+) (` + remoteHumanSize + `)(?: / (` + remoteHumanSize + `))? [0-9.]+s(?: done)?$`)
	remoteSummaryLine  = regexp.MustCompile(`^Built in [0-9.]+s: .*?(?:, ([0-9]+) layers?(?:, (` + remoteHumanSize + `))?)?$`)
)

// line is one line of the server's text.
func (r *remoteRender) line(l string) {
	m := remoteStepLine.FindStringSubmatch(l)
	if m == nil {
		r.message(l)
		return
	}
	r.flushBlank()
	n, _ := strconv.Atoi(m[1])
	rest := m[2]
	s, known := r.steps[n]
	if !known {
		r.steps[n] = r.p.Step(rest)
		return
	}
	switch {
	case rest == "CACHED":
		s.Cached()
		delete(r.steps, n)
	case remoteDoneLine.MatchString(rest):
		s.Done()
		delete(r.steps, n)
	case rest == "CANCELED":
		s.Fail(context.Canceled)
		delete(r.steps, n)
	case strings.HasPrefix(rest, "ERROR: "):
		s.Fail(errors.New(strings.TrimPrefix(rest, "ERROR: ")))
		delete(r.steps, n)
	default:
		if o := remoteOutputLine.FindStringSubmatch(rest); o != nil {
			io.WriteString(s, o[1]+"\n")
		} else if t := remoteTransferLine.FindStringSubmatch(rest); t != nil {
			progress.Transfer(s, t[1], parseHumanBytes(t[2]), parseHumanBytes(t[3]))
		} else {
			io.WriteString(s, rest+"\n")
		}
	}
}

// message is a line outside any step: the server's summary (kept for
// the local display's own), docker's "Successfully …" lines (kiln build
// prints none), an error report.
func (r *remoteRender) message(l string) {
	if l == "" {
		r.flushBlank()
		r.blank = true
		return
	}
	if m := remoteSummaryLine.FindStringSubmatch(l); m != nil {
		r.blank, r.inSum = false, true
		r.summary.Layers, _ = strconv.Atoi(m[1])
		r.summary.Size = parseHumanBytes(m[2])
		return
	}
	if r.inSum {
		switch k, v, _ := strings.Cut(l, " "); k {
		case "image":
			return
		case "manifest":
			r.summary.Digest = v
			return
		case "named":
			return
		}
		r.inSum = false
	}
	if strings.HasPrefix(l, "Successfully built ") || strings.HasPrefix(l, "Successfully tagged ") {
		return
	}
	if e, ok := strings.CutPrefix(l, "ERROR: "); ok {
		r.errors = append(r.errors, e)
	}
	r.flushBlank()
	fmt.Fprintln(r.msgs, l)
}

func (r *remoteRender) flushBlank() {
	if r.blank {
		r.blank = false
		fmt.Fprintln(r.msgs)
	}
}

// saidError reports whether the stream's text already said msg.
func (r *remoteRender) saidError(msg string) bool {
	return slices.Contains(r.errors, msg)
}

// parseHumanBytes reads progress.HumanBytes back; "" is 0.
func parseHumanBytes(s string) int64 {
	units := []struct {
		suffix string
		mult   float64
	}{{"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0
			}
			return int64(f * u.mult)
		}
	}
	return 0
}

// pullCredentials are this machine's registry credentials (docker login,
// kiln login), for X-Registry-Config: the server pulls base images with
// them, as dockerd does with the docker CLI's. A Docker config that
// cannot be read sends none, and says so.
func pullCredentials(stderr io.Writer) map[string]client.AuthConfig {
	cf, err := config.Load(config.Dir())
	if err != nil {
		fmt.Fprintf(stderr, "kiln: warning: reading the Docker config for registry credentials: %v (the server pulls without them)\n", err)
		return nil
	}
	all, err := cf.GetAllCredentials()
	if err != nil {
		fmt.Fprintf(stderr, "kiln: warning: reading registry credentials: %v (the server pulls without them)\n", err)
		return nil
	}
	out := map[string]client.AuthConfig{}
	for k, a := range all {
		if a.Username == "" && a.Password == "" && a.IdentityToken == "" && a.RegistryToken == "" && a.Auth == "" {
			continue
		}
		out[k] = client.AuthConfig{Username: a.Username, Password: a.Password, Auth: a.Auth, ServerAddress: a.ServerAddress,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
	}
	return out
}
