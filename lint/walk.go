package lint

import (
	"context"
	"github.com/kiln-build/kiln/internal/envlist"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"
	"github.com/moby/buildkit/util/system"
	"github.com/moby/patternmatcher"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// walker follows the stages as BuildKit's conversion does, for the rules
// it evaluates on the way. Where the conversion would fail, the walk
// stops: the build reports that error, with its own words.
type walker struct {
	opt    Options
	lint   *linter.Linter
	escape rune
	ignore *patternmatcher.PatternMatcher

	shlex  *shell.Lex
	global envList // build platform args and meta ARGs
	states []*state
	byName map[string]*state
}

// state is one stage (or an image named by COPY --from or RUN
// --mount=from) on its way through the walk.
type state struct {
	stage        instructions.Stage
	name         string // the stage's name, lowercased
	origBase     string // FROM as written
	base         *state // FROM another stage
	deps         []*state
	unregistered bool // an image only named by COPY --from / --mount from
	platform     *ocispecs.Platform

	img      *Image // the base image's config; nil when unknown
	resolved bool

	env        envList
	envUnknown bool // the base image's env is unknown: no UndefinedVar
	shellCmd   []string
	buildArgs  []instructions.KeyValuePairOptional
	workdirSet bool
	dispatched bool

	cmd, entrypoint, healthcheck tracker
}

type tracker struct {
	loc []bkparser.Range
	set bool
}

// nonEnvArgs are build args BuildKit reads itself; they never become env.
var nonEnvArgs = map[string]bool{"BUILDKIT_SBOM_SCAN_CONTEXT": true, "BUILDKIT_SBOM_SCAN_STAGE": true}

var reservedStageNames = map[string]bool{"context": true, "scratch": true}

func (w *walker) targetPlatform() ocispecs.Platform {
	if w.opt.Platform != nil {
		return platforms.Normalize(*w.opt.Platform)
	}
	return ocispecs.Platform{OS: "linux", Architecture: "amd64"}
}

func (w *walker) buildPlatform() ocispecs.Platform {
	if w.opt.BuildPlatform != nil {
		return platforms.Normalize(*w.opt.BuildPlatform)
	}
	return ocispecs.Platform{OS: "linux", Architecture: "amd64"}
}

func (w *walker) run(ctx context.Context, stages []instructions.Stage, metaArgs []instructions.ArgCommand) {
	w.stageNames(stages)
	w.commandCasing(stages)

	target := w.opt.Target
	if target == "" {
		target = stages[len(stages)-1].Name
	}
	w.shlex = shell.NewLex(w.escape)
	w.global = w.defaultArgs(target)
	w.baseImagesWithDefaultArgs(stages, metaArgs)

	global, allArgs, err := metaArgValues(w.global, w.shlex, metaArgs, w.opt.BuildArgs)
	if err != nil {
		return
	}
	w.global = global
	w.byName = map[string]*state{}
	if !w.states0(stages, allArgs) {
		return
	}
	tgt := w.states[len(w.states)-1]
	if w.opt.Target != "" {
		var ok bool
		if tgt, ok = w.byName[strings.ToLower(w.opt.Target)]; !ok {
			return
		}
	}
	if !w.dependencies() {
		return
	}
	reachable := map[*state]bool{}
	var mark func(*state)
	mark = func(s *state) {
		if reachable[s] {
			return
		}
		reachable[s] = true
		if s.base != nil {
			mark(s.base)
		}
		for _, d := range s.deps {
			mark(d)
		}
	}
	mark(tgt)
	if w.opt.AllStages {
		for _, s := range w.states {
			reachable[s] = true
		}
	}
	w.resolve(ctx, reachable)
	for _, s := range w.states {
		if !reachable[s] || s.unregistered {
			continue
		}
		if !w.dispatch(s) {
			return
		}
	}
}

// stageNames: ReservedStageName, DuplicateStageName.
func (w *walker) stageNames(stages []instructions.Stage) {
	seen := map[string]bool{}
	for _, st := range stages {
		if st.Name == "" {
			continue
		}
		if reservedStageNames[st.Name] {
			w.lint.Run(&linter.RuleReservedStageName, st.Location, linter.RuleReservedStageName.Format(st.Name))
		}
		if seen[st.Name] {
			w.lint.Run(&linter.RuleDuplicateStageName, st.Location, linter.RuleDuplicateStageName.Format(st.Name))
		}
		seen[st.Name] = true
	}
}

// commandCasing: ConsistentInstructionCasing. An instruction is either
// all lower or all upper case, and the Dockerfile's majority wins.
func (w *walker) commandCasing(stages []instructions.Stage) {
	lower, upper := 0, 0
	count := func(s string) {
		switch s {
		case strings.ToLower(s):
			lower++
		case strings.ToUpper(s):
			upper++
		}
	}
	for _, st := range stages {
		count(st.OrigCmd)
		for _, c := range st.Commands {
			count(c.Name())
		}
	}
	majorityLower := lower > upper
	check := func(s string, loc []bkparser.Range) {
		want := ""
		if majorityLower && strings.ToLower(s) != s {
			want = "lowercase"
		} else if !majorityLower && strings.ToUpper(s) != s {
			want = "uppercase"
		}
		if want != "" {
			w.lint.Run(&linter.RuleConsistentInstructionCasing, loc, linter.RuleConsistentInstructionCasing.Format(s, want))
		}
	}
	for _, st := range stages {
		check(st.OrigCmd, st.Location)
		for _, c := range st.Commands {
			check(c.Name(), c.Location())
		}
	}
}

// defaultArgs are the platform args every Dockerfile sees, overridable
// with --build-arg.
func (w *walker) defaultArgs(target string) envList {
	bp, tp := w.buildPlatform(), w.targetPlatform()
	if target == "" {
		target = "default"
	}
	var env envList
	for _, kv := range [][2]string{
		{"BUILDPLATFORM", platforms.Format(bp)},
		{"BUILDOS", bp.OS},
		{"BUILDOSVERSION", bp.OSVersion},
		{"BUILDARCH", bp.Architecture},
		{"BUILDVARIANT", bp.Variant},
		{"TARGETPLATFORM", platforms.FormatAll(tp)},
		{"TARGETOS", tp.OS},
		{"TARGETOSVERSION", tp.OSVersion},
		{"TARGETARCH", tp.Architecture},
		{"TARGETVARIANT", tp.Variant},
		{"TARGETSTAGE", target},
	} {
		v := kv[1]
		if o, ok := w.opt.BuildArgs[kv[0]]; ok {
			v = o
		}
		env = env.Set(kv[0], v)
	}
	return env
}

// argDef is a meta ARG's definition, for UndefinedArgInFrom's candidates.
type argDef struct{ key string }

// metaArgValues evaluates the ARGs before the first FROM in order, each
// default expanded with the ones before it; --build-arg values win.
func metaArgValues(env envList, lex *shell.Lex, cmds []instructions.ArgCommand, buildArgs map[string]string) (envList, []argDef, error) {
	var defs []argDef
	for _, c := range cmds {
		for _, kv := range c.Args {
			var value *string
			if v, ok := buildArgs[kv.Key]; ok {
				value = &v
			} else if kv.Value != nil {
				res, err := lex.ProcessWordWithMatches(*kv.Value, env)
				if err != nil {
					return nil, nil, err
				}
				value = &res.Result
			}
			if value != nil {
				env = env.Set(kv.Key, *value)
			}
			defs = append(defs, argDef{key: kv.Key})
		}
	}
	return env, defs, nil
}

// baseImagesWithDefaultArgs: InvalidDefaultArgInFrom — with no build args
// at all, each FROM must still name a valid image.
func (w *walker) baseImagesWithDefaultArgs(stages []instructions.Stage, metaArgs []instructions.ArgCommand) {
	args, _, err := metaArgValues(w.global, w.shlex, metaArgs, nil)
	if err != nil {
		return
	}
	for _, st := range stages {
		res, err := w.shlex.ProcessWordWithMatches(st.BaseName, args)
		if err != nil {
			return
		}
		if !validReference(res.Result) {
			w.lint.Run(&linter.RuleInvalidDefaultArgInFrom, st.Location, linter.RuleInvalidDefaultArgInFrom.Format(st.BaseName))
		}
	}
}

// validReference reports whether s parses as an image reference.
func validReference(s string) bool {
	if s == "" {
		return false
	}
	_, err := name.ParseReference(s)
	return err == nil
}

// states0 expands each FROM with the meta ARGs (UndefinedArgInFrom,
// RedundantTargetPlatform, FromPlatformFlagConstDisallowed) and links
// stages built on earlier ones.
func (w *walker) states0(stages []instructions.Stage, allArgs []argDef) bool {
	for _, st := range stages {
		l := w.lint.WithMergedConfigFromComments(st.Comments)
		known := map[string]bool{}
		for _, a := range allArgs {
			known[a.key] = true
		}
		for _, k := range w.global.Keys() {
			known[k] = true
		}
		res, err := w.shlex.ProcessWordWithMatches(st.BaseName, w.global)
		unusedFromArgs(known, res.Unmatched, st.Location, l)
		if err != nil || res.Result == "" {
			return false
		}
		s := &state{stage: st, name: strings.ToLower(st.Name), origBase: st.BaseName}
		s.stage.BaseName = res.Result
		if st.Platform != "" {
			pres, err := w.shlex.ProcessWordWithMatches(st.Platform, w.global)
			unusedFromArgs(known, pres.Unmatched, st.Location, l)
			w.redundantTargetPlatform(st.Platform, pres, st.Location, l)
			constPlatform(st.Name, pres, st.Location, l)
			if err != nil || pres.Result == "" {
				return false
			}
			p, err := platforms.Parse(pres.Result)
			if err != nil {
				return false
			}
			s.platform = &p
		}
		w.add(s)
	}
	return true
}

func (w *walker) add(s *state) {
	w.states = append(w.states, s)
	if b, ok := w.byName[s.stage.BaseName]; ok {
		s.base = b
	}
	if s.stage.Name != "" {
		w.byName[s.name] = s
	}
}

// dependencies links COPY --from and RUN --mount from= to the stages or
// images they name.
func (w *walker) dependencies() bool {
	n := len(w.states)
	for _, s := range w.states[:n] {
		for _, c := range s.stage.Commands {
			var froms []string
			switch c := c.(type) {
			case *instructions.CopyCommand:
				if c.From == "" {
					continue
				}
				if res, err := w.shlex.ProcessWordWithMatches(c.From, envList(nil)); err != nil || res.Result != c.From {
					return false // BuildKit refuses a variable in --from
				}
				if i, err := strconv.Atoi(c.From); err == nil {
					if i < 0 || i >= len(w.states) {
						return false
					}
					s.deps = append(s.deps, w.states[i])
					continue
				}
				froms = []string{c.From}
			case *instructions.RunCommand:
				for _, m := range instructions.GetMounts(c) {
					if m.From == "" {
						froms = append(froms, "scratch")
					} else {
						froms = append(froms, m.From)
					}
				}
			}
			for _, from := range froms {
				d, ok := w.byName[strings.ToLower(from)]
				if !ok {
					d = &state{stage: instructions.Stage{BaseName: from, Location: c.Location()}, origBase: from, unregistered: true}
					w.add(d)
				}
				s.deps = append(s.deps, d)
			}
		}
	}
	return true
}

// resolve looks up the base images of the stages that will be
// dispatched, all at once, and checks their platform
// (InvalidBaseImagePlatform).
func (w *walker) resolve(ctx context.Context, reachable map[*state]bool) {
	var wg sync.WaitGroup
	for _, s := range w.states {
		if s.base != nil || !reachable[s] {
			continue
		}
		s.resolved = true
		if s.stage.BaseName == "scratch" {
			p := w.targetPlatform()
			s.img = &Image{Platform: p}
			s.platform = &p
			continue
		}
		if w.opt.BaseImage == nil {
			continue
		}
		wg.Add(1)
		go func(s *state) {
			defer wg.Done()
			p := w.targetPlatform()
			if s.platform != nil {
				p = *s.platform
			}
			img, err := w.opt.BaseImage(ctx, s.stage.BaseName, p)
			if err == nil {
				s.img = img
			}
		}(s)
	}
	wg.Wait()
	for _, s := range w.states {
		if !s.resolved || s.stage.BaseName == "scratch" {
			continue
		}
		p := w.targetPlatform()
		if s.platform != nil {
			p = *s.platform
		}
		if s.img == nil {
			s.platform = &p
			continue
		}
		if s.platform == nil && !w.opt.ExplicitPlatform {
			p = autoDetectPlatform(s.img.Platform, p, w.buildPlatform())
		}
		if p.OS != s.img.Platform.OS || p.Architecture != s.img.Platform.Architecture {
			msg := linter.RuleInvalidBaseImagePlatform.Format(s.origBase,
				platforms.FormatAll(platforms.Normalize(p)), platforms.FormatAll(platforms.Normalize(s.img.Platform)))
			w.lint.Run(&linter.RuleInvalidBaseImagePlatform, s.stage.Location, msg)
		}
		s.platform = &p
	}
}

// autoDetectPlatform: with no --platform asked for, an image of the
// build platform is run as is rather than emulated.
func autoDetectPlatform(img, target, build ocispecs.Platform) ocispecs.Platform {
	if img.OS == target.OS && img.Architecture == target.Architecture {
		return target
	}
	if img.OS == build.OS && img.Architecture == build.Architecture {
		return build
	}
	return target
}

// dispatch walks one stage's instructions.
func (w *walker) dispatch(s *state) bool {
	s.dispatched = true
	if b := s.base; b != nil {
		s.env = b.env.Clone()
		s.envUnknown = b.envUnknown
		s.shellCmd = b.shellCmd
		s.platform = b.platform
		s.workdirSet = b.workdirSet
		s.buildArgs = append(s.buildArgs, b.buildArgs...)
	} else if s.img != nil {
		s.env = envList(nil).Merge(s.img.Env)
		s.shellCmd = s.img.Shell
	} else {
		s.envUnknown = true
	}
	if s.platform == nil {
		p := w.targetPlatform()
		s.platform = &p
	}
	if _, ok := s.env.Get("PATH"); !ok && s.platform.OS != "windows" {
		s.env = s.env.Set("PATH", system.DefaultPathEnv(s.platform.OS))
	}
	for _, c := range s.stage.Commands {
		if !w.command(s, c) {
			return false
		}
	}
	return true
}

func (w *walker) command(s *state, c instructions.Command) bool {
	l := w.lint.WithMergedConfigFromComments(c.Comments())
	_, isArg := c.(*instructions.ArgCommand)
	if ex, ok := c.(instructions.SupportsSingleWordExpansion); ok && !isArg {
		err := ex.Expand(func(word string) (string, error) {
			out, unmatched, err := w.shlex.ProcessWord(word, s.env)
			w.unmatched(s, c, unmatched, l)
			return out, err
		})
		if err != nil {
			return false
		}
	}
	if ex, ok := c.(instructions.SupportsSingleWordExpansionRaw); ok {
		err := ex.ExpandRaw(func(word string) (string, error) {
			lex := shell.NewLex('\\')
			lex.SkipProcessQuotes = true
			out, unmatched, err := lex.ProcessWord(word, s.env)
			w.unmatched(s, c, unmatched, l)
			return out, err
		})
		if err != nil {
			return false
		}
	}
	switch c := c.(type) {
	case *instructions.EnvCommand:
		for _, e := range c.Env {
			if e.NoDelim {
				l.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
			}
			secretKey("ENV", e.Key, c.Location(), l)
			s.env = s.env.Set(e.Key, e.Value)
		}
	case *instructions.LabelCommand:
		for _, kv := range c.Labels {
			if kv.NoDelim {
				l.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
			}
		}
	case *instructions.WorkdirCommand:
		// Only the first WORKDIR of the Dockerfile's own matters: fixing
		// it fixes the relative ones after it.
		if !s.workdirSet && !system.IsAbs(c.Path, s.platform.OS) {
			l.Run(&linter.RuleWorkdirRelativePath, c.Location(), linter.RuleWorkdirRelativePath.Format(c.Path))
		}
		s.workdirSet = true
	case *instructions.CmdCommand:
		usedOnce(c, &s.cmd, l)
		if c.PrependShell && len(s.shellCmd) == 0 {
			l.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
		}
	case *instructions.EntrypointCommand:
		usedOnce(c, &s.entrypoint, l)
		if c.PrependShell && len(s.shellCmd) == 0 {
			l.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
		}
	case *instructions.HealthCheckCommand:
		usedOnce(c, &s.healthcheck, l)
	case *instructions.ShellCommand:
		s.shellCmd = c.Shell
	case *instructions.ExposeCommand:
		return w.expose(s, c, l)
	case *instructions.ArgCommand:
		return w.arg(s, c, l)
	case *instructions.CopyCommand:
		if c.From == "" {
			w.copySources(c.SourcePaths, false, c.Location(), l)
		}
	case *instructions.AddCommand:
		w.copySources(c.SourcePaths, true, c.Location(), l)
	}
	return true
}

// unmatched: UndefinedVar, for the variables a word used that neither
// the environment nor a declared ARG defines.
func (w *walker) unmatched(s *state, c instructions.Command, unmatched map[string]struct{}, l *linter.Linter) {
	if len(unmatched) == 0 || s.envUnknown {
		return
	}
	for _, a := range s.buildArgs {
		delete(unmatched, a.Key)
	}
	for v := range unmatched {
		if nonEnvArgs[v] {
			continue
		}
		match, _ := suggest.Search(v, s.env.Keys(), runtime.GOOS != "windows")
		l.Run(&linter.RuleUndefinedVar, c.Location(), linter.RuleUndefinedVar.Format(v, match))
	}
}

// arg declares a stage's ARGs: a --build-arg value wins, then the
// default, then the value of the meta ARG of that name.
func (w *walker) arg(s *state, c *instructions.ArgCommand, l *linter.Linter) bool {
	for _, a := range c.Args {
		secretKey("ARG", a.Key, c.Location(), l)
		bv, hasValue := w.opt.BuildArgs[a.Key]
		hasDefault := a.Value != nil
		if !hasDefault && !hasValue {
			if v, ok := w.global.Get(a.Key); ok {
				a.Value = &v
			}
		}
		if hasValue {
			a.Value = &bv
		} else if hasDefault {
			v, unmatched, err := w.shlex.ProcessWord(*a.Value, s.env)
			w.unmatched(s, c, unmatched, l)
			if err != nil {
				return false
			}
			a.Value = &v
		}
		if a.Value != nil && !nonEnvArgs[a.Key] {
			s.env = s.env.Set(a.Key, *a.Value)
		}
		s.buildArgs = append(s.buildArgs, a)
	}
	return true
}

// expose: ExposeProtoCasing, ExposeInvalidFormat (EXPOSE takes no host
// address or port).
func (w *walker) expose(s *state, c *instructions.ExposeCommand, l *linter.Linter) bool {
	var ports []string
	for _, p := range c.Ports {
		ps, err := w.shlex.ProcessWords(p, s.env)
		if err != nil {
			return false
		}
		ports = append(ports, ps...)
	}
	for _, raw := range ports {
		ip, hostPort, containerPort := splitPortParts(raw)
		port, proto, _ := strings.Cut(containerPort, "/")
		if port == "" {
			return false
		}
		switch strings.ToLower(proto) {
		case "", "tcp", "udp", "sctp":
		default:
			return false
		}
		if proto != strings.ToLower(proto) {
			l.Run(&linter.RuleExposeProtoCasing, c.Location(), linter.RuleExposeProtoCasing.Format(raw))
		}
		if ip != "" || hostPort != "" {
			l.Run(&linter.RuleExposeInvalidFormat, c.Location(), linter.RuleExposeInvalidFormat.Format(raw))
		}
	}
	return true
}

// splitPortParts splits [ip:][hostPort:]containerPort[/proto].
func splitPortParts(raw string) (ip, hostPort, containerPort string) {
	parts := strings.Split(raw, ":")
	n := len(parts)
	switch n {
	case 1:
		return "", "", parts[0]
	case 2:
		return "", parts[0], parts[1]
	default:
		return strings.Join(parts[:n-2], ":"), parts[n-2], parts[n-1]
	}
}

// copySources: CopyIgnoredFile, for sources from the build context that
// .dockerignore leaves out. Patterns with exclusions ("!keep") are not
// judged: a file inside an ignored directory may be let back in.
func (w *walker) copySources(srcs []string, add bool, loc []bkparser.Range, l *linter.Linter) {
	if w.ignore == nil || w.ignore.Exclusions() {
		return
	}
	cmd := "Copy"
	if add {
		cmd = "Add"
	}
	for _, src := range srcs {
		if add && isRemote(src) {
			continue
		}
		src = filepath.ToSlash(filepath.Clean(src))
		if (src == "." || src == "/") && !rootIgnored(w.ignore) {
			continue
		}
		if ok, err := w.ignore.MatchesOrParentMatches(src); err == nil && ok {
			l.Run(&linter.RuleCopyIgnoredFile, loc, linter.RuleCopyIgnoredFile.Format(cmd, src))
		}
	}
}

// rootIgnored: "." names the whole context, ignored only by a pattern
// that ignores every entry of it.
func rootIgnored(pm *patternmatcher.PatternMatcher) bool {
	for _, p := range pm.Patterns() {
		if p.Exclusion() {
			continue
		}
		switch p.String() {
		case "*", "**", "**/*":
			return true
		}
	}
	return false
}

func isRemote(s string) bool {
	for _, p := range []string{"http://", "https://", "git@", "git://", "ssh://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return strings.Contains(s, ".git#") || strings.HasSuffix(s, ".git")
}

// unusedFromArgs: UndefinedArgInFrom, for a FROM variable no ARG before
// the first FROM declares.
func unusedFromArgs(known map[string]bool, unmatched map[string]struct{}, loc []bkparser.Range, l *linter.Linter) {
	var keys []string
	for k := range known {
		keys = append(keys, k)
	}
	for arg := range unmatched {
		if known[arg] {
			continue
		}
		match, _ := suggest.Search(arg, keys, true)
		l.Run(&linter.RuleUndefinedArgInFrom, loc, linter.RuleUndefinedArgInFrom.Format(arg, match))
	}
}

// redundantTargetPlatform: FROM --platform=$TARGETPLATFORM says what
// the default already is.
func (w *walker) redundantTargetPlatform(platformVar string, res shell.ProcessWordResult, loc []bkparser.Range, l *linter.Linter) {
	if len(res.Matched) != 1 || len(res.Unmatched) != 0 {
		return
	}
	if _, ok := res.Matched["TARGETPLATFORM"]; !ok {
		return
	}
	if v, _ := w.global.Get("TARGETPLATFORM"); res.Result == v {
		l.Run(&linter.RuleRedundantTargetPlatform, loc, linter.RuleRedundantTargetPlatform.Format(platformVar))
	}
}

// constPlatform: FromPlatformFlagConstDisallowed, unless the stage's
// name says which platform it is for.
func constPlatform(stageName string, res shell.ProcessWordResult, loc []bkparser.Range, l *linter.Linter) {
	if len(res.Matched) > 0 || len(res.Unmatched) > 0 {
		return
	}
	p, err := platforms.Parse(res.Result)
	if err != nil {
		return
	}
	if strings.Contains(stageName, p.OS) || strings.Contains(stageName, p.Architecture) {
		return
	}
	l.Run(&linter.RuleFromPlatformFlagConstDisallowed, loc, linter.RuleFromPlatformFlagConstDisallowed.Format(res.Result))
}

// usedOnce: MultipleInstructionsDisallowed, reported at the earlier
// instruction, the one that has no effect.
func usedOnce(c instructions.Command, t *tracker, l *linter.Linter) {
	if t.set {
		l.Run(&linter.RuleMultipleInstructionsDisallowed, t.loc, linter.RuleMultipleInstructionsDisallowed.Format(c.Name()))
	}
	t.loc, t.set = c.Location(), true
}

var (
	secretDeny  = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	secretAllow = regexp.MustCompile(`(?i)(?:_|^)(?:public|file|version)(?:_|$)`)
)

// secretKey: SecretsUsedInArgOrEnv, for names that look like they hold a
// credential (a word such as TOKEN or PASSWORD between underscores).
func secretKey(instruction, key string, loc []bkparser.Range, l *linter.Linter) {
	if secretDeny.MatchString(key) && !secretAllow.MatchString(key) {
		l.Run(&linter.RuleSecretsUsedInArgOrEnv, loc, linter.RuleSecretsUsedInArgOrEnv.Format(instruction, key))
	}
}

// envList is an ordered environment: KEY=VALUE entries.
type envList = envlist.List
