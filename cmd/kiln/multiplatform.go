package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/image"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/provenance"
	"github.com/kiln-build/kiln/remotecache"
	"github.com/kiln-build/kiln/trace"
)

// parsePlatformFlag reads --platform: a comma-separated list, or nothing
// for this machine's platform.
func parsePlatformFlag(s string) ([]ocispec.Platform, error) {
	ps, err := platform.ParseList(s)
	if err != nil {
		return nil, usagef("--platform %s: %v; give os/arch[/variant] platforms separated by commas, e.g. linux/amd64,linux/arm64", s, err)
	}
	return ps, nil
}

// checkPlatformOutputs refuses, before any work, an output that cannot
// hold the images of several platforms.
func checkPlatformOutputs(ps []ocispec.Platform, outs []export.Output) error {
	if len(ps) < 2 {
		return nil
	}
	for _, o := range outs {
		if err := export.CheckMultiPlatform(o); err != nil {
			return usagef("-o type=%s with --platform %s: %v", o.Type, formatPlatforms(ps), err)
		}
	}
	return nil
}

func formatPlatforms(ps []ocispec.Platform) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = platform.Format(p)
	}
	return strings.Join(s, ",")
}

// multiBuild is what runBuild hands a build of several platforms.
type multiBuild struct {
	f         buildFlags
	opts      planner.Options // the build's options, for any platform
	platforms []ocispec.Platform
	outputs   []export.Output
	store     *cache.Store
	prov      *provenanceInputs
	cacheTo   []remotecache.Target
	printer   *progress.Display
}

// platformBuild is one platform's part of a multi-platform build.
type platformBuild struct {
	platform ocispec.Platform
	res      *planner.Result
	prov     *provenanceInputs // its own resolved bases
}

// runMultiPlatform builds every platform as its own graph, all at once
// within --jobs, then writes one index (pushes, OCI outputs) or one
// directory per platform (local, tar outputs).
func runMultiPlatform(ctx context.Context, cmd *cobra.Command, mb multiBuild) error {
	f := mb.f
	jobs := f.jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	slots := make(chan struct{}, jobs)
	if mb.prov.invocation == "" {
		mb.prov.invocation = provenance.NewInvocationID()
	}
	// Every platform is checked before any starts: one that cannot run
	// its RUN steps here fails the build before anything is pulled.
	for _, p := range mb.platforms {
		o := mb.opts
		o.Platform = p
		if err := planner.CheckPlatform(o); err != nil {
			return err
		}
	}
	builds := make([]*platformBuild, len(mb.platforms))
	// Not an errgroup's context: it ends when the group does, and the
	// lazy layers of a remote cache keep the context they were resolved
	// with until the exports below read them.
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(mb.platforms))
	var wg sync.WaitGroup
	for i, p := range mb.platforms {
		rec := &recordingResolver{next: mb.prov.resolver.next}
		pb := &platformBuild{platform: p, prov: mb.prov.forResolver(rec)}
		pb.prov.platform = platform.Format(p)
		builds[i] = pb
		o := mb.opts
		o.Platform, o.MultiPlatform, o.Slots, o.Resolver = p, true, slots, rec
		// --explain-cache compares a step with its last build for the
		// same platform.
		o.DockerfileID += "\x00" + platform.Format(p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := planner.Build(bctx, o)
			if err == nil {
				res.RawConfig, err = inlineConfig(mb.cacheTo, res)
			}
			if err != nil {
				errs[i] = err
				cancel() // the other platforms' builds stop too
				return
			}
			pb.res = res
		}()
	}
	wg.Wait()
	if err := firstCause(errs); err != nil {
		return err
	}
	msgs := mb.printer.Messages()
	warnRewriteWithoutEpoch(msgs, mb.outputs, builds[0].res.Epoch)

	for _, out := range mb.outputs {
		octx, outSpan := trace.Start(ctx, "export "+out.Type)
		outSpan.SetString("dest", out.Dest)
		out.Pusher = f.registry
		imgs := make([]export.PlatformImage, len(builds))
		for i, pb := range builds {
			layers, err := outputLayers(octx, mb.store, pb.res.Layers, out)
			if err != nil {
				return err
			}
			img, err := image.New(mb.store, pb.res.RawConfig, layers, true)
			if err != nil {
				return err
			}
			imgs[i] = export.PlatformImage{Platform: platform.V1(pb.platform), Dir: platform.DirName(pb.platform), Image: img, Attest: pb.prov.attester(out)}
		}
		step := mb.printer.Step(fmt.Sprintf("exporting to %s %s", out.Type, out.Dest))
		var watched []export.PlatformImage
		for _, pi := range imgs {
			pi.Image = progress.WatchImage(step, pi.Image)
			watched = append(watched, pi)
		}
		if err := export.WriteMulti(octx, watched, out, f.tags); err != nil {
			err = fmt.Errorf("exporting %s to %s: %w", out.Type, out.Dest, err)
			step.Fail(err)
			return err
		}
		step.Done()
		outSpan.End()
	}

	// The index as pushed with --push, and as --iidfile and the summary
	// name it.
	imgs := make([]export.PlatformImage, len(builds))
	var size int64
	layers := 0
	for i, pb := range builds {
		img, err := image.New(mb.store, pb.res.RawConfig, pb.res.Layers, true)
		if err != nil {
			return err
		}
		imgs[i] = export.PlatformImage{Platform: platform.V1(pb.platform), Dir: platform.DirName(pb.platform), Image: img}
		if f.registry.pushFlag {
			imgs[i].Attest = pb.prov.attester(export.Output{Type: "registry"})
		}
		for _, l := range pb.res.Layers {
			size += l.Size
		}
		layers += len(pb.res.Layers)
	}
	idx, err := export.MultiPlatformIndex(imgs, f.tags, true)
	if err != nil {
		return err
	}
	if len(f.tags) > 0 {
		// The store names one image per name; FROM NAME of a platform
		// then comes from the registry.
		fmt.Fprintf(msgs, "note: %s not recorded in kiln's store: it holds one platform per name (push it, or build one --platform to use it as a base)\n", strings.Join(f.tags, ", "))
	}
	if f.registry.pushFlag {
		f.registry.log = msgs
		pctx, span := trace.Start(ctx, "push")
		err := f.registry.Push(pctx, idx, f.tags)
		span.End()
		if err != nil {
			return err
		}
	}
	if f.registry.metadataFile != "" {
		if err := f.registry.writeIndexMetadata(idx); err != nil {
			return err
		}
	}
	if len(mb.cacheTo) > 0 {
		// A stage built for the build platform in every graph has the
		// same keys each time: its records go once.
		var steps []planner.StepResult
		seen := map[string]bool{}
		for _, pb := range builds {
			notePushed(f.registry, pb.res.Layers)
			for _, st := range pb.res.Steps {
				if !seen[st.Key] {
					seen[st.Key] = true
					steps = append(steps, st)
				}
			}
		}
		cctx, sp := trace.Start(ctx, "export cache")
		exportCaches(cctx, f.registry.res, mb.store, mb.cacheTo, steps, mb.opts.Remote, msgs)
		sp.End()
	}
	dg, err := idx.Digest()
	if err != nil {
		return err
	}
	if f.iidfile != "" {
		if err := os.WriteFile(f.iidfile, []byte(dg.String()), 0o644); err != nil {
			return fmt.Errorf("writing --iidfile: %w", err)
		}
	}
	if f.progress == "quiet" {
		fmt.Fprintln(cmd.OutOrStdout(), dg)
	}
	fmt.Fprintf(msgs, "index %s: %s, %d layers, %s\n", dg, formatPlatforms(mb.platforms), layers, progress.HumanBytes(size))
	progress.Summarize(mb.printer, progress.Summary{Names: f.tags})
	return nil
}

// firstCause is the error that stopped a multi-platform build: the first
// that is not the cancellation it caused in the other platforms' builds.
func firstCause(errs []error) error {
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// outputLayers are the layers an output writes: as built for a push (a
// registry mounts or copies what it lacks), else read and verified into
// the store, recompressed when the output asks for another compression.
func outputLayers(ctx context.Context, store *cache.Store, layers []cache.LayerInfo, out export.Output) ([]cache.LayerInfo, error) {
	var err error
	if out.Type != "registry" && out.Type != "image" {
		if layers, err = store.Materialize(ctx, layers, nil); err != nil {
			return nil, err
		}
	}
	if comp, cerr := export.CompressionOf(out); cerr == nil && (comp.Kind != "gzip" || comp.Level != 0) {
		if layers, err = store.Materialize(ctx, layers, nil); err != nil {
			return nil, err
		}
		rctx, span := trace.Start(ctx, "recompress to "+comp.Kind)
		layers, err = store.Recompressed(rctx, layers, cache.Compression{Kind: comp.Kind, Level: comp.Level})
		span.End()
		if err != nil {
			return nil, err
		}
	}
	return layers, nil
}

// forResolver is p for one platform's build: the same request and
// invocation, with the bases that build resolves.
func (p *provenanceInputs) forResolver(r *recordingResolver) *provenanceInputs {
	return &provenanceInputs{
		req: p.req, contextDir: p.contextDir, dockerfilePath: p.dockerfilePath, dockerfile: p.dockerfile,
		target: p.target, buildArgs: p.buildArgs, labels: p.labels, secretIDs: p.secretIDs,
		started: p.started, resolver: r, log: p.log, invocation: p.invocation,
	}
}

// writeIndexMetadata writes --metadata-file for a multi-platform build:
// the index's digest and descriptor (as buildx, no config digest: each
// platform has its own), and the pushed names.
func (o *registryOptions) writeIndexMetadata(idx v1.ImageIndex) error {
	desc, err := descriptorOf(idx)
	if err != nil {
		return err
	}
	var names []string
	o.mu.Lock()
	for _, p := range o.pushed {
		names = append(names, p.names...)
	}
	o.mu.Unlock()
	md := map[string]any{
		"containerimage.digest":     desc.Digest.String(),
		"containerimage.descriptor": desc,
	}
	if len(names) > 0 {
		md["image.name"] = strings.Join(names, ",")
	} else if tags := o.tags(); len(tags) > 0 {
		md["image.name"] = strings.Join(tags, ",")
	}
	return o.writeMetadataMap(md)
}
