package planner

import (
	"fmt"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-build/kiln/emulate"
	"github.com/kiln-build/kiln/parser"
	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/progress"
)

// targetPlatform is opt's target platform, normalised; the native one
// when none is given.
func targetPlatform(opt Options) ocispec.Platform {
	if opt.Platform.OS == "" {
		return platform.Native()
	}
	return platforms.Normalize(opt.Platform)
}

// CheckPlatform tells, without pulling or running anything, whether every
// RUN that a build with opt would run can execute here; a multi-platform
// build checks all its platforms before it starts any.
func CheckPlatform(opt Options) error {
	opt.Platform = targetPlatform(opt)
	b := &build{opt: opt, df: opt.Dockerfile, byName: map[string]*stage{}}
	if err := b.plan(); err != nil {
		return err
	}
	_, reach, err := b.reachable()
	if err != nil {
		return err
	}
	return b.checkEmulation(reach)
}

// addPlatformKey puts a stage's platform into its root key, so that the
// steps of two platforms never share a record even on the same base (FROM
// scratch, a single-platform image). linux/amd64 adds nothing: every record
// made before kiln built other platforms was for it, and stays valid.
func addPlatformKey(k *stepKey, p ocispec.Platform) {
	if platform.Equal(p, platform.Legacy) {
		return
	}
	k.add("platform", platform.Format(p))
}

// platformPrefix is what step names start with when several platforms are
// built, BuildKit's way: the stage's platform, and "->ARCH" when the stage
// runs for another platform than the target (FROM --platform=$BUILDPLATFORM).
func (b *build) platformPrefix(p ocispec.Platform) string {
	if !b.opt.MultiPlatform {
		return ""
	}
	out := platform.Format(p)
	if t := b.opt.Platform; !platform.Equal(p, t) {
		out += "->"
		if t.OS != p.OS {
			out += t.OS + "/"
		}
		out += t.Architecture
		if t.Variant != "" {
			out += "/" + t.Variant
		}
	}
	return out + " "
}

// emulated returns the platform a stage's RUN steps run under emulation
// for, or "" when they run natively.
func emulated(s *stage) string {
	if emulate.IsNative(platform.Format(s.platform)) {
		return ""
	}
	return platform.Format(s.platform)
}

// checkEmulation refuses a build whose reachable stages hold a RUN for a
// platform this machine cannot execute, naming the first such RUN, before
// anything is pulled or run.
func (b *build) checkEmulation(reach map[*stage]bool) error {
	for _, s := range b.stages {
		if !reach[s] || emulated(s) == "" {
			continue
		}
		for _, c := range s.st.Commands {
			if _, ok := c.(*instructions.RunCommand); !ok {
				continue
			}
			if err := checkRunnable(s); err != nil {
				return parser.At(b.df.Name, c.Location(), err)
			}
			break
		}
	}
	return nil
}

// checkRunnable refuses a RUN of stage s that this machine cannot execute.
func checkRunnable(s *stage) error {
	e := emulated(s)
	if e == "" {
		return nil
	}
	if err := emulate.Check(e); err != nil {
		return fmt.Errorf("RUN for %s: %w", e, err)
	}
	return nil
}

// stepLog announces a step; a RUN for a foreign platform says it runs
// emulated, so tools can count such steps from the progress events.
func (b *build) stepLog(s *stage, k *stepKey, name string) progress.Step {
	if k.kind == "run" {
		if e := emulated(s); e != "" {
			return progress.StepWith(b.prog, name, progress.StepInfo{Emulated: e})
		}
	}
	return b.prog.Step(name)
}

// warnPlatformMismatch says, as BuildKit's InvalidBaseImagePlatform check
// does, that a base image is for another platform than its stage (a
// single-platform image: an index without a match is an error earlier).
// The image is used anyway.
func warnPlatformMismatch(log interface{ Write([]byte) (int, error) }, canonical string, img dockerspec.DockerOCIImage, want ocispec.Platform) {
	if platform.Matches(img.OS, img.Architecture, img.Variant, want) {
		return
	}
	got := platform.Format(ocispec.Platform{OS: img.OS, Architecture: img.Architecture, Variant: img.Variant})
	fmt.Fprintf(log, "WARN: InvalidBaseImagePlatform: Base image %s was pulled with platform %q, expected %q for current build\n", canonical, got, platform.Format(want))
}
