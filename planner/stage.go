package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/system"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/trace"
)

// stage is one FROM section and, once run, its resulting state.
type stage struct {
	index       int
	st          instructions.Stage
	name        string // lower-cased AS name, "" when unnamed
	displayName string // for progress: name, "stage-N", or "" for a single stage
	baseName    string // FROM after ARG expansion
	base        *stage // FROM an earlier stage
	fromDeps    []*stage
	triggers    []instructions.Command // ONBUILD of a base stage
	total       int                    // steps shown as [i/total]
	stubs       executor.StubCache     // its RUN steps' mount points, from one to the next
	platform    ocispec.Platform       // what the stage builds for: FROM --platform, its base stage's, or the target
	prefix      string                 // platform in step names when several are built ("linux/arm64 ")
	cmdIndex    int
	named       *namedSource // --build-context replacing the stage, or its FROM directory
	replaced    bool         // the stage's name is a named context's: it is that context

	done      chan struct{}
	errOnce   sync.Once
	startOnce sync.Once
	err       error

	// state after the stage ran (read only after done is closed)
	img       dockerspec.DockerOCIImage
	layers    []cache.LayerInfo
	env       envList // the environment steps see: image env + ARGs
	workdir   string
	user      string
	buildArgs []instructions.KeyValuePairOptional
	cmdSet    bool // CMD given in this stage (ENTRYPOINT then keeps it)
	lex       *shell.Lex
	key       string       // cache key of the stage's state so far
	lastEmpty bool         // the last step changed no file
	lastTime  *time.Time   // when the latest step (or the base's last) was made
	epoch     *time.Time   // SOURCE_DATE_EPOCH: the time of every history entry the build adds
	pos       string       // position of the instruction being dispatched, for --explain-cache
	next      int          // index in st.Commands of the command after it (0 in ONBUILD triggers)
	steps     []StepResult // steps of this stage that ran or hit, for --cache-to
}

func (s *stage) finish(err error) {
	s.errOnce.Do(func() {
		s.err = err
		close(s.done)
	})
}

// wait blocks until s has run.
func (s *stage) wait(ctx context.Context) error {
	select {
	case <-s.done:
		if s.err != nil {
			return fmt.Errorf("stage %s failed", s.label())
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stage) label() string {
	if s.name != "" {
		return s.name
	}
	return fmt.Sprintf("%d", s.index)
}

func (s *stage) countSteps() int {
	n := 0
	if s.baseName != "scratch" && s.base == nil {
		n = 1
	}
	for _, c := range append(slices.Clone(s.triggers), s.st.Commands...) {
		switch c.(type) {
		case *instructions.AddCommand, *instructions.CopyCommand, *instructions.RunCommand, *instructions.WorkdirCommand:
			n++
		}
	}
	return n
}

// stepName is the "[stage i/n] INSTRUCTION" title of a step.
func (s *stage) stepName(text string, onbuild bool) string {
	if s.total == 0 {
		return text
	}
	s.cmdIndex++
	out := "[" + s.prefix
	if s.displayName != "" {
		out += s.displayName + " "
	}
	out += fmt.Sprintf("%*d/%d] ", int(1+math.Log10(float64(s.total))), s.cmdIndex, s.total)
	if onbuild {
		out += "ONBUILD "
	}
	return out + text
}

func parseTrigger(expr string) (instructions.Command, error) {
	res, err := bkparser.Parse(strings.NewReader(expr))
	if err != nil {
		return nil, fmt.Errorf("parsing ONBUILD trigger %q: %w", expr, err)
	}
	if len(res.AST.Children) != 1 {
		return nil, errors.New("onbuild trigger should be a single expression")
	}
	cmd, err := instructions.ParseCommand(res.AST.Children[0])
	if err != nil {
		return nil, fmt.Errorf("parsing ONBUILD trigger %q: %w", expr, err)
	}
	if err := parser.Check(cmd); err != nil {
		return nil, fmt.Errorf("ONBUILD trigger %q: %w", expr, err)
	}
	return cmd, nil
}

// runStage resolves the stage's base and dispatches its instructions.
func (b *build) runStage(ctx context.Context, s *stage) (err error) {
	ctx, span := trace.Start(ctx, "stage "+s.label())
	defer func() { span.SetError(err); span.End() }()
	s.lex = shell.NewLex(b.df.Escape)
	at := func(err error) error { return parser.At(b.df.Name, s.st.Location, err) }
	triggers := s.triggers
	switch {
	case s.named != nil && s.named.isDir():
		if err := b.fromNamedDir(ctx, s); err != nil {
			return at(err)
		}
	case s.base != nil:
		if err := b.waitFor(ctx, s.base); err != nil {
			return err
		}
		bs := s.base
		s.img = cloneImage(bs.img)
		s.img.Config.OnBuild = nil
		s.layers = slices.Clone(bs.layers)
		s.env = bs.env.Clone()
		s.buildArgs = slices.Clone(bs.buildArgs)
		s.key = bs.key
	case s.baseName == "scratch":
		s.img = emptyImage(s.platform)
		k := newStepKey("scratch", "")
		addPlatformKey(k, s.platform)
		s.key = k.sum()
	default:
		img, layers, canonical, err := b.pullBase(ctx, s)
		if err != nil {
			return at(err)
		}
		s.img, s.layers = img, layers
		k := newStepKey("from", "")
		k.add("image", canonical)
		addPlatformKey(k, s.platform)
		s.key = k.sum()
		for _, expr := range img.Config.OnBuild {
			cmd, err := parseTrigger(expr)
			if err != nil {
				return at(err)
			}
			triggers = append(triggers, cmd)
		}
		if err := b.linkFromDeps(s, triggers); err != nil {
			return err
		}
		s.img.Config.OnBuild = nil
	}
	if _, ok := envList(s.img.Config.Env).Get("PATH"); !ok {
		s.img.Config.Env = append(s.img.Config.Env, "PATH="+system.DefaultPathEnvUnix)
	}
	for _, kv := range s.img.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		s.env = s.env.Set(k, v)
	}
	s.workdir = "/"
	if wd := s.img.Config.WorkingDir; wd != "" {
		nwd, err := system.NormalizeWorkdir("/", wd, targetOS)
		if err != nil {
			return at(err)
		}
		s.workdir = nwd
	}
	s.user = s.img.Config.User
	for _, h := range s.img.History {
		if h.Created != nil && (s.lastTime == nil || h.Created.After(*s.lastTime)) {
			t := *h.Created
			s.lastTime = &t
		}
	}
	if s.replaced {
		return nil
	}

	for i, c := range triggers {
		s.pos = fmt.Sprintf("%s\x00stage %d\x00onbuild %d", b.opt.DockerfileID, s.index, i)
		if err := b.dispatch(ctx, s, c, true); err != nil {
			return parser.At(b.df.Name, s.st.Location, err)
		}
	}
	for i, c := range s.st.Commands {
		s.pos = fmt.Sprintf("%s\x00stage %d\x00command %d", b.opt.DockerfileID, s.index, i)
		s.next = i + 1
		if err := b.dispatch(ctx, s, c, false); err != nil {
			return parser.At(b.df.Name, c.Location(), err)
		}
	}
	return nil
}

// dispatch expands one instruction's words and applies it.
func (b *build) dispatch(ctx context.Context, s *stage, c instructions.Command, onbuild bool) error {
	if _, isArg := c.(*instructions.ArgCommand); !isArg {
		if ex, ok := c.(instructions.SupportsSingleWordExpansion); ok {
			err := ex.Expand(func(word string) (string, error) {
				w, _, err := s.lex.ProcessWord(word, s.env)
				return w, err
			})
			if err != nil {
				return err
			}
		}
	}
	if ex, ok := c.(instructions.SupportsSingleWordExpansionRaw); ok {
		err := ex.ExpandRaw(func(word string) (string, error) {
			lex := shell.NewLex('\\')
			lex.SkipProcessQuotes = true
			w, _, err := lex.ProcessWord(word, s.env)
			return w, err
		})
		if err != nil {
			return err
		}
	}

	switch c := c.(type) {
	case *instructions.MaintainerCommand:
		s.img.Author = c.Maintainer
		s.history("MAINTAINER "+c.Maintainer, false, false)
	case *instructions.EnvCommand:
		msg := "ENV"
		for _, e := range c.Env {
			msg += " " + e.String()
			s.env = s.env.Set(e.Key, e.Value)
			s.img.Config.Env = envList(s.img.Config.Env).Set(e.Key, e.Value)
		}
		s.history(msg, false, false)
	case *instructions.LabelCommand:
		msg := "LABEL"
		if s.img.Config.Labels == nil {
			s.img.Config.Labels = map[string]string{}
		}
		for _, l := range c.Labels {
			s.img.Config.Labels[l.Key] = l.Value
			msg += " " + l.String()
		}
		s.history(msg, false, false)
	case *instructions.OnbuildCommand:
		s.img.Config.OnBuild = append(s.img.Config.OnBuild, c.Expression)
	case *instructions.CmdCommand:
		args := c.CmdLine
		if c.PrependShell {
			args = withShell(s.img, args)
		}
		s.img.Config.Cmd = args
		s.img.Config.ArgsEscaped = true //nolint:staticcheck // Docker still reads it
		s.cmdSet = true
		s.history(fmt.Sprintf("CMD %q", args), false, false)
	case *instructions.EntrypointCommand:
		args := c.CmdLine
		if c.PrependShell {
			args = withShell(s.img, args)
		}
		s.img.Config.Entrypoint = args
		if !s.cmdSet {
			s.img.Config.Cmd = nil
		}
		s.history(fmt.Sprintf("ENTRYPOINT %q", args), false, false)
	case *instructions.HealthCheckCommand:
		h := c.Health
		s.img.Config.Healthcheck = &dockerspec.HealthcheckConfig{
			Test: slices.Clone(h.Test), Interval: h.Interval, Timeout: h.Timeout,
			StartPeriod: h.StartPeriod, StartInterval: h.StartInterval, Retries: h.Retries,
		}
		s.history(fmt.Sprintf("HEALTHCHECK %+v", *s.img.Config.Healthcheck), false, false)
	case *instructions.ExposeCommand:
		var ports []string
		for _, p := range c.Ports {
			ws, err := s.lex.ProcessWords(p, s.env)
			if err != nil {
				return err
			}
			ports = append(ports, ws...)
		}
		parsed, err := parsePorts(ports)
		if err != nil {
			return err
		}
		if s.img.Config.ExposedPorts == nil {
			s.img.Config.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range parsed {
			s.img.Config.ExposedPorts[p] = struct{}{}
		}
		s.history(fmt.Sprintf("EXPOSE %v", parsed), false, false)
	case *instructions.UserCommand:
		s.user = c.User
		s.img.Config.User = c.User
		s.history("USER "+c.User, false, false)
	case *instructions.VolumeCommand:
		if s.img.Config.Volumes == nil {
			s.img.Config.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if v == "" {
				return errors.New("VOLUME specified can not be an empty string")
			}
			s.img.Config.Volumes[v] = struct{}{}
		}
		s.history(fmt.Sprintf("VOLUME %v", c.Volumes), false, false)
	case *instructions.StopSignalCommand:
		if err := checkSignal(c.Signal); err != nil {
			return err
		}
		s.img.Config.StopSignal = c.Signal
		s.history("STOPSIGNAL "+c.Signal, false, false)
	case *instructions.ShellCommand:
		s.img.Config.Shell = slices.Clone(c.Shell)
		s.history(fmt.Sprintf("SHELL %v", c.Shell), false, false)
	case *instructions.ArgCommand:
		return b.dispatchArg(s, c)
	case *instructions.WorkdirCommand:
		return b.dispatchWorkdir(ctx, s, c, onbuild)
	case *instructions.RunCommand:
		return b.dispatchRun(ctx, s, c, onbuild)
	case *instructions.CopyCommand:
		return b.dispatchCopy(ctx, s, copyCmd{
			sd: c.SourcesAndDest, from: c.From, chown: c.Chown, chmod: c.Chmod,
			text: c.String(), loc: c.Location(), onbuild: onbuild,
			parents: c.Parents, excludes: c.ExcludePatterns, link: c.Link,
		})
	case *instructions.AddCommand:
		return b.dispatchCopy(ctx, s, copyCmd{
			sd: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, add: true,
			checksum: c.Checksum, keepGitDir: c.KeepGitDir, unpack: c.Unpack,
			text: c.String(), loc: c.Location(), onbuild: onbuild,
			excludes: c.ExcludePatterns, link: c.Link,
		})
	default:
		return fmt.Errorf("instruction %s is not supported by kiln", c.Name())
	}
	return nil
}

func (b *build) dispatchArg(s *stage, c *instructions.ArgCommand) error {
	var parts []string
	for _, arg := range c.Args {
		v, hasValue := b.opt.BuildArgs[arg.Key]
		hasDefault := arg.Value != nil
		if !hasDefault && !hasValue {
			if gv, ok := b.globalArgs.Get(arg.Key); ok {
				arg.Value = &gv
			}
		}
		if hasValue {
			arg.Value = &v
		} else if hasDefault {
			w, _, err := s.lex.ProcessWord(*arg.Value, s.env)
			if err != nil {
				return err
			}
			arg.Value = &w
		}
		if arg.Value != nil {
			s.env = s.env.Set(arg.Key, *arg.Value)
		}
		s.buildArgs = append(s.buildArgs, arg)
		p := arg.Key
		if arg.Value != nil {
			p += "=" + *arg.Value
		}
		parts = append(parts, p)
	}
	s.history("ARG "+strings.Join(parts, " "), false, false)
	return nil
}

// history records an instruction in the image history.
func (s *stage) history(msg string, layer, buildkit bool) {
	if buildkit {
		msg += " # buildkit"
	}
	h := ocispec.History{
		CreatedBy:  msg,
		Comment:    "buildkit.dockerfile.v0",
		EmptyLayer: !layer,
	}
	switch {
	case s.epoch != nil:
		t := *s.epoch
		h.Created = &t
	case s.lastTime != nil:
		t := *s.lastTime
		h.Created = &t
	}
	s.img.History = append(s.img.History, h)
}

func withShell(img dockerspec.DockerOCIImage, args []string) []string {
	sh := slices.Clone(img.Config.Shell)
	if len(sh) == 0 {
		sh = []string{"/bin/sh", "-c"}
	}
	return append(sh, strings.Join(args, " "))
}

func emptyImage(p ocispec.Platform) dockerspec.DockerOCIImage {
	var img dockerspec.DockerOCIImage
	img.OS, img.Architecture, img.Variant = p.OS, p.Architecture, p.Variant
	img.RootFS.Type = "layers"
	img.Config.WorkingDir = "/"
	img.Config.Env = []string{"PATH=" + system.DefaultPathEnvUnix}
	return img
}

// cloneImage deep-copies the parts of a config that steps mutate.
func cloneImage(src dockerspec.DockerOCIImage) dockerspec.DockerOCIImage {
	img := src
	c := &img.Config
	c.Env = slices.Clone(src.Config.Env)
	c.Cmd = slices.Clone(src.Config.Cmd)
	c.Entrypoint = slices.Clone(src.Config.Entrypoint)
	c.OnBuild = slices.Clone(src.Config.OnBuild)
	c.Shell = slices.Clone(src.Config.Shell)
	c.ExposedPorts = cloneMap(src.Config.ExposedPorts)
	c.Volumes = cloneMap(src.Config.Volumes)
	if src.Config.Labels != nil {
		c.Labels = make(map[string]string, len(src.Config.Labels))
		for k, v := range src.Config.Labels {
			c.Labels[k] = v
		}
	}
	if src.Config.Healthcheck != nil {
		h := *src.Config.Healthcheck
		h.Test = slices.Clone(h.Test)
		c.Healthcheck = &h
	}
	img.History = slices.Clone(src.History)
	img.RootFS.DiffIDs = slices.Clone(src.RootFS.DiffIDs)
	return img
}

func cloneMap(m map[string]struct{}) map[string]struct{} {
	if m == nil {
		return nil
	}
	out := make(map[string]struct{}, len(m))
	for k := range m {
		out[k] = struct{}{}
	}
	return out
}

func digestOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

// decodeConfig reads an image config in Docker's extended OCI shape.
func decodeConfig(raw []byte) (dockerspec.DockerOCIImage, error) {
	var img dockerspec.DockerOCIImage
	if err := json.Unmarshal(raw, &img); err != nil {
		return img, fmt.Errorf("decoding image config: %w", err)
	}
	return img, nil
}
