package planner

import (
	"context"
	"errors"
	"fmt"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"os"
	"path/filepath"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/kiln-build/kiln/buildctx"
	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/rooted"
	"github.com/kiln-build/kiln/sshforward"
)

// FetchRemoteContext fetches a git or https --build-context into the
// empty directory dest. Nil means this kiln cannot fetch them: such a
// context is refused when a build uses it. ssh is the build's --ssh
// agents, for a git remote reached over ssh.
var FetchRemoteContext func(ctx context.Context, url, dest string, ssh sshforward.Agents) error

// namedSource is one --build-context of the build, prepared on first use.
type namedSource struct {
	name string // normalised, as FROM and --from names are compared
	src  buildctx.Source

	once sync.Once
	cs   *ctxSource // a directory context, once prepared
	temp bool       // cs.dir is kiln's (a fetched remote context)
	err  error

	layoutOnce sync.Once
	layoutImg  v1.Image
	layoutName string
	layoutErr  error
}

// ctxSource is a directory that COPY and RUN --mount read as a build
// context: the main one, or a named directory context with its own
// .dockerignore.
type ctxSource struct {
	dir      string
	excludes []string
	hasher   *contexthash.Hasher
}

// isDir reports whether the context is a filesystem tree (a directory,
// or a remote source fetched into one) rather than an image.
func (ns *namedSource) isDir() bool {
	return ns.src.Kind == buildctx.Dir || ns.src.Kind == buildctx.Remote
}

// initNamed indexes the build's named contexts and, when some are images,
// routes image resolution through them, so that FROM NAME, COPY
// --from=NAME and RUN --mount from=NAME all find them where they would
// have found an image.
func (b *build) initNamed() {
	if len(b.opt.NamedContexts) == 0 {
		return
	}
	b.named = map[string]*namedSource{}
	for n, src := range b.opt.NamedContexts {
		norm, err := buildctx.Normalize(n)
		if err != nil {
			norm = n
		}
		b.named[norm] = &namedSource{name: norm, src: src}
	}
	b.opt.Resolver = namedResolver{b: b, next: b.opt.Resolver}
}

// namedFor returns the named context ref stands for, or nil. Like
// BuildKit, scratch and context are never named contexts.
func (b *build) namedFor(ref string) *namedSource {
	if len(b.named) == 0 || strings.EqualFold(ref, "scratch") || strings.EqualFold(ref, "context") {
		return nil
	}
	n, err := buildctx.Normalize(ref)
	if err != nil {
		return nil
	}
	return b.named[n]
}

// namedDirFor returns the directory context a --from names, or nil: a
// stage of that name comes first.
func (b *build) namedDirFor(from string) *namedSource {
	if from == "" || b.stageRef(from) != nil {
		return nil
	}
	if ns := b.namedFor(from); ns != nil && ns.isDir() {
		return ns
	}
	return nil
}

// planNamed applies the named contexts to a stage while planning: a stage
// whose name is a context's is replaced by it (its instructions are not
// run, as BuildKit does), and a FROM naming a directory context starts
// from that directory.
func (b *build) planNamed(s *stage) {
	if s.name != "" {
		if ns := b.namedFor(s.name); ns != nil {
			s.named, s.replaced, s.base = ns, true, nil
			// Nothing of the stage's own is looked at again: no context
			// prefetch, no network for its RUNs.
			s.st.Commands = nil
			s.baseName = ns.name
			if ns.src.Kind == buildctx.Image && ns.src.Ref == "scratch" {
				s.baseName = "scratch"
			}
			return
		}
	}
	if s.base != nil {
		return
	}
	if ns := b.namedFor(s.baseName); ns != nil {
		switch {
		case ns.isDir():
			s.named = ns
		case ns.src.Kind == buildctx.Image && ns.src.Ref == "scratch":
			s.baseName = "scratch"
		}
	}
}

// dirSource prepares a directory context: fetches a remote one, reads its
// .dockerignore (a named context honours its own, as BuildKit's does) and
// opens its hasher.
func (b *build) dirSource(ctx context.Context, ns *namedSource) (*ctxSource, error) {
	ns.once.Do(func() {
		if b.opt.Store == nil {
			ns.err = errors.New("named build contexts need kiln's store")
			return
		}
		dir := ns.src.Dir
		if ns.src.Kind == buildctx.Remote {
			if FetchRemoteContext == nil {
				ns.err = fmt.Errorf("--build-context %s=%s: git and https build contexts are not supported by this kiln yet; clone or download it and pass the directory instead", ns.name, ns.src.URL)
				return
			}
			tmp, err := b.opt.Store.TempDir("build-context-")
			if err != nil {
				ns.err = err
				return
			}
			ns.temp = true
			dir = filepath.Join(tmp, "src")
			if err := os.Mkdir(dir, 0o755); err != nil {
				ns.err = err
				return
			}
			ns.cs = &ctxSource{dir: dir} // removed by closeNamed even if the fetch fails
			if err := FetchRemoteContext(ctx, ns.src.URL, dir, b.opt.SSH); err != nil {
				ns.err = fmt.Errorf("--build-context %s=%s: fetching: %w", ns.name, ns.src.URL, err)
				return
			}
		}
		excludes, err := readIgnore(dir)
		if err != nil {
			ns.err = fmt.Errorf("--build-context %s: %w", ns.name, err)
			return
		}
		h, err := contexthash.Open(filepath.Join(b.opt.Store.Root, "contexthash"), dir)
		if err != nil {
			ns.err = err
			return
		}
		ns.cs = &ctxSource{dir: dir, excludes: excludes, hasher: h}
	})
	return ns.cs, ns.err
}

// readIgnore reads the .dockerignore at the top of a context, inside it.
func readIgnore(dir string) ([]string, error) {
	r, err := rooted.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	defer r.Close()
	data, err := r.ReadFile("/.dockerignore", 1<<20)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/.dockerignore: %w", dir, err)
	}
	pats, err := ignorefile.ReadAll(strings.NewReader(string(data)))
	if err != nil {
		return nil, fmt.Errorf("parsing %s/.dockerignore: %w", dir, err)
	}
	return pats, nil
}

// closeNamed keeps what hashing the named directories learnt and removes
// fetched remote contexts.
func (b *build) closeNamed() {
	for _, ns := range b.named {
		if ns.cs == nil {
			continue
		}
		if ns.temp {
			os.RemoveAll(filepath.Dir(ns.cs.dir))
			continue
		}
		if ns.cs.hasher != nil {
			ns.cs.hasher.Save()
		}
	}
}

// mainContext is the build context as a ctxSource.
func (b *build) mainContext() (*ctxSource, error) {
	if b.opt.ContextDir == "" || b.ctxHash == nil {
		return nil, errors.New("no build context")
	}
	abs, err := filepath.Abs(b.opt.ContextDir)
	if err != nil {
		return nil, err
	}
	return &ctxSource{dir: abs, excludes: b.opt.Excludes, hasher: b.ctxHash}, nil
}

// mountContext is the directory a RUN --mount=type=bind reads: the build
// context without from=, a named directory context, or nil for a stage or
// an image.
func (b *build) mountContext(ctx context.Context, from string) (*ctxSource, error) {
	if from == "" {
		return b.mainContext()
	}
	if ns := b.namedDirFor(from); ns != nil {
		return b.dirSource(ctx, ns)
	}
	return nil, nil
}

// copyFromNamedDir points a COPY --from=NAME at a named directory context,
// which it then reads as COPY reads the build context: through its
// .dockerignore, hashed by content into the key.
func (b *build) copyFromNamedDir(ctx context.Context, ns *namedSource, op *copier.Op, spec *executor.CopySpec, k *stepKey) error {
	cs, err := b.dirSource(ctx, ns)
	if err != nil {
		return err
	}
	spec.SourceDir = cs.dir
	op.Excludes = cs.excludes
	sum, entries, err := cs.hasher.Checksum(op.Sources, op.Excludes)
	if err != nil {
		return fmt.Errorf("copying from build context %s: %w", ns.name, err)
	}
	k.add("named context", sum)
	op.Verify = true
	for _, e := range entries {
		k.note("file "+strings.TrimPrefix(e.Path, "/"), e.Sum)
		op.Expect = append(op.Expect, copier.Entry{Path: e.Path, Sum: e.Sum})
	}
	return nil
}

// fromNamedDir starts a stage from a directory context: an empty image
// whose one layer is the directory, as .dockerignore leaves it, owned by
// root (buildx sends local contexts with uid and gid 0), keyed by content.
func (b *build) fromNamedDir(ctx context.Context, s *stage) error {
	ns := s.named
	cs, err := b.dirSource(ctx, ns)
	if err != nil {
		return err
	}
	s.img = emptyImage(s.platform)
	s.key = newStepKey("scratch", "").sum()
	sum, entries, err := cs.hasher.Checksum([]string{"/"}, cs.excludes)
	if err != nil {
		return fmt.Errorf("reading build context %s: %w", ns.name, err)
	}
	k := newStepKey("named context", s.key)
	k.add("context", sum)
	op := copier.Op{Kind: "copy", Sources: []string{"/"}, Dest: "/", Excludes: cs.excludes, Verify: true}
	for _, e := range entries {
		k.note("file "+strings.TrimPrefix(e.Path, "/"), e.Sum)
		op.Expect = append(op.Expect, copier.Entry{Path: e.Path, Sum: e.Sum})
	}
	name := "[context " + ns.name + "] load from client"
	if !s.replaced {
		name = s.stepName("FROM "+ns.name, false)
	}
	s.pos = fmt.Sprintf("%s\x00stage %d\x00from", b.opt.DockerfileID, s.index)
	return b.runStep(ctx, s, name, k, func(ctx context.Context, log progress.Step, rf executor.Rootfs) error {
		return executor.Copy(ctx, executor.CopySpec{Rootfs: rf, SourceDir: cs.dir, Op: op})
	})
}

// targetPlatform is the platform an oci-layout context's index is
// resolved for.
func (b *build) targetPlatform(p ocispec.Platform) v1.Platform {
	return v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// namedResolver resolves the names of image contexts to their images:
// docker-image:// through the build's resolver (kiln's store, then the
// registry), oci-layout:// from the layout; any other name as before.
type namedResolver struct {
	b    *build
	next ImageResolver
}

func (r namedResolver) ResolvePlatform(ctx context.Context, ref string, p ocispec.Platform) (v1.Image, string, error) {
	ns := r.b.namedFor(ref)
	if r.next == nil && (ns == nil || ns.src.Kind == buildctx.Image) {
		return nil, "", errors.New("no image resolver configured")
	}
	if ns == nil {
		return r.next.ResolvePlatform(ctx, ref, p)
	}
	switch ns.src.Kind {
	case buildctx.Image:
		if ns.src.Ref == "scratch" {
			return empty.Image, "scratch", nil
		}
		img, canonical, err := r.next.ResolvePlatform(ctx, ns.src.Ref, p)
		if err != nil {
			return nil, "", fmt.Errorf("--build-context %s=%s: %w", ns.name, ns.src.Spec, err)
		}
		return img, canonical, nil
	case buildctx.Layout:
		ns.layoutOnce.Do(func() {
			ns.layoutImg, ns.layoutName, ns.layoutErr = buildctx.OpenLayout(ns.src, r.b.targetPlatform(p))
			if ns.layoutErr != nil {
				ns.layoutErr = fmt.Errorf("--build-context %s=%s: %w", ns.name, ns.src.Spec, ns.layoutErr)
			}
		})
		return ns.layoutImg, ns.layoutName, ns.layoutErr
	}
	return nil, "", fmt.Errorf("--build-context %s is a directory, not an image", ns.name)
}
