package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/registry"
	"github.com/kiln-build/kiln/trace"
)

// registryOptions are the build flags about registries. It is also the
// export.Pusher of -o type=registry, so that --push and -o pushes share
// one configuration and one --metadata-file.
type registryOptions struct {
	insecure     []string
	mirrors      []string
	pushFlag     bool
	annotations  export.Output // --annotation, for the push of --push
	metadataFile string
	maxLayerSize string
	fs           *pflag.FlagSet

	res *registry.Resolver
	log io.Writer

	mu     sync.Mutex
	pushed []pushedImage
}

type pushedImage struct {
	names  []string
	digest v1.Hash
	desc   v1.Descriptor
}

func addRegistryFlags(fs *pflag.FlagSet) *registryOptions {
	o := &registryOptions{fs: fs, log: os.Stderr}
	fs.BoolVar(&o.pushFlag, "push", false, "push the image to every -t name (shorthand for -o type=registry)")
	fs.StringArrayVar(&o.insecure, "insecure-registry", nil, "allow plain HTTP or unverified TLS for HOST[:PORT] (repeatable)")
	fs.StringArrayVar(&o.mirrors, "registry-mirror", nil, "pull REGISTRY's images through MIRROR first: [REGISTRY=]HOST[:PORT][/PATH], REGISTRY defaults to docker.io; replaces kiln.toml's mirrors for REGISTRY (repeatable)")
	fs.StringVar(&o.metadataFile, "metadata-file", "", "write the image digest, config digest and pushed names as JSON to this file")
	fs.StringVar(&o.maxLayerSize, "max-layer-size", "", "refuse a base-image layer that unpacks to more than this, e.g. 100g (default 64GiB, or layer-size under [limits] in kiln.toml)")
	return o
}

// newResolver reads kiln.toml ($KILN_CONFIG, else /etc/kiln/kiln.toml) and
// applies the registry flags over it.
func newResolver(insecure, mirrors []string, log io.Writer) (*registry.Resolver, error) {
	cfg, err := registry.LoadConfig(registry.ConfigPath())
	if err != nil {
		return nil, err
	}
	if cfg.Registry == nil {
		cfg.Registry = map[string]registry.HostConfig{}
	}
	replaced := map[string]bool{}
	for _, m := range mirrors {
		host, mirror, plain, err := registry.ParseMirrorFlag(m)
		if err != nil {
			return nil, usagef("--registry-mirror %q: %v", m, err)
		}
		hc := cfg.Registry[host]
		if !replaced[host] {
			hc.Mirrors, replaced[host] = nil, true
		}
		hc.Mirrors = append(hc.Mirrors, mirror)
		cfg.Registry[host] = hc
		if plain {
			mh, _, _ := strings.Cut(mirror, "/")
			mc := cfg.Registry[mh]
			mc.HTTP = true
			cfg.Registry[mh] = mc
		}
	}
	return &registry.Resolver{Insecure: insecure, Config: cfg, Log: log}, nil
}

// resolver resolves FROM and COPY --from images. It runs before the build,
// so it also checks what a push will need: a failed push after a long
// build is the expensive way to learn that -t was missing.
func (o *registryOptions) resolver() (planner.ImageResolver, error) {
	res, err := newResolver(o.insecure, o.mirrors, o.log)
	if err != nil {
		return nil, err
	}
	if o.maxLayerSize != "" {
		n, err := registry.ParseSize(o.maxLayerSize)
		if err != nil || n == 0 {
			return nil, usagef("--max-layer-size %s: want a positive size such as 100g", o.maxLayerSize)
		}
		res.Config.Limits.LayerSize = registry.Size(n)
	}
	o.res = res
	if o.pushFlag {
		names := o.tags()
		if len(names) == 0 {
			return nil, usagef("--push needs a name to push to: add -t REGISTRY/REPOSITORY[:TAG]")
		}
		for _, n := range names {
			if _, err := res.Parse(n); err != nil {
				return nil, usagef("-t %q: %v", n, err)
			}
		}
	}
	return res, nil
}

// layerSizeLimit is the bound on one pulled layer's unpacked size, from
// --max-layer-size, else kiln.toml, else the default; the store enforces
// it. Call it after resolver.
func (o *registryOptions) layerSizeLimit() int64 {
	var l registry.Limits
	if o.res != nil {
		l = o.res.Config.Limits
	}
	return int64(l.WithDefaults().LayerSize)
}

// tags are the build's -t names, read from the flag set the options were
// added to.
func (o *registryOptions) tags() []string {
	if o.fs == nil {
		return nil
	}
	f := o.fs.Lookup("tag")
	if f == nil {
		return nil
	}
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.GetSlice()
	}
	return nil
}

// Push implements export.Pusher: it pushes img (an image, or an index of
// an image and its attestations) to refs and prints the digest, once per
// reference as docker push does.
func (o *registryOptions) Push(ctx context.Context, img export.Artifact, refs []string) error {
	if o.res == nil {
		res, err := newResolver(o.insecure, o.mirrors, o.log)
		if err != nil {
			return err
		}
		o.res = res
	}
	pushed, err := o.res.Push(ctx, img, refs)
	if err != nil {
		return err
	}
	desc, err := descriptorOf(img)
	if err != nil {
		return err
	}
	p := pushedImage{digest: desc.Digest, desc: desc}
	for i, r := range pushed {
		fmt.Fprintf(o.log, "pushed %s@%s\n", refs[i], r.Digest)
		p.names = append(p.names, refs[i])
	}
	o.mu.Lock()
	o.pushed = append(o.pushed, p)
	o.mu.Unlock()
	return nil
}

// push pushes the built image when the command line asked for it (with
// the attestations attest gives, when not nil), then writes
// --metadata-file.
func (o *registryOptions) push(ctx context.Context, img v1.Image, names []string, log io.Writer, attest export.Attester) error {
	if log != nil {
		o.log = log
	}
	if o.pushFlag {
		a, err := export.Annotate(img, o.annotations, func(img v1.Image) (export.Artifact, error) {
			return export.Attach(img, attest, names, true)
		})
		if err != nil {
			return err
		}
		pctx, span := trace.Start(ctx, "push")
		err = o.Push(pctx, a, names)
		span.End()
		if err != nil {
			return err
		}
	}
	if o.metadataFile == "" {
		return nil
	}
	return o.writeMetadata(img)
}

func descriptorOf(img export.Artifact) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("computing the image digest: %w", err)
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("computing the manifest size: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading the manifest media type: %w", err)
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size}, nil
}

// writeMetadata writes buildx's --metadata-file keys: the manifest digest
// and descriptor (of the pushed manifest when the push changed media
// types), the config digest, and the pushed names comma-separated.
func (o *registryOptions) writeMetadata(img v1.Image) error {
	desc, err := descriptorOf(img)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("computing the config digest: %w", err)
	}
	var names []string
	o.mu.Lock()
	for _, p := range o.pushed {
		desc = p.desc
		names = append(names, p.names...)
	}
	o.mu.Unlock()
	md := map[string]any{
		"containerimage.digest":        desc.Digest.String(),
		"containerimage.descriptor":    desc,
		"containerimage.config.digest": cfg.String(),
	}
	if len(names) > 0 {
		md["image.name"] = strings.Join(names, ",")
	} else if tags := o.tags(); len(tags) > 0 {
		md["image.name"] = strings.Join(tags, ",")
	}
	return o.writeMetadataMap(md)
}

// writeMetadataMap writes md as --metadata-file.
func (o *registryOptions) writeMetadataMap(md map[string]any) error {
	b, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding --metadata-file: %w", err)
	}
	// Write beside and rename, so a CI step reading the file never sees
	// half of it.
	tmp, err := os.CreateTemp(filepath.Dir(o.metadataFile), ".kiln-metadata-*")
	if err != nil {
		return fmt.Errorf("writing --metadata-file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing --metadata-file: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("writing --metadata-file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing --metadata-file: %w", err)
	}
	if err := os.Rename(tmp.Name(), o.metadataFile); err != nil {
		return fmt.Errorf("writing --metadata-file: %w", err)
	}
	return nil
}
