package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/registry"
	"github.com/kiln-build/kiln/remotecache"
	"github.com/kiln-build/kiln/trace"
)

// cacheFlags are --cache-to and --cache-from, in buildx's CSV spelling.
type cacheFlags struct {
	to, from []string
}

func addCacheFlags(fs *pflag.FlagSet) *cacheFlags {
	c := &cacheFlags{}
	fs.StringArrayVar(&c.to, "cache-to", nil, "export the build cache (repeatable): type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR[,mode=min|max] | type=inline")
	fs.StringArrayVar(&c.from, "cache-from", nil, "import a build cache (repeatable; sources merge): type=registry,ref=REF (a cache, or an image pushed with inline cache) | type=local,src=DIR | REF")
	return c
}

// parseCSV splits buildx's key=value,key=value spelling, refusing keys
// not in allowed with a message naming the key.
func parseCSV(flag, spec string, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, field := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(field, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			return nil, usagef("%s %q: want key=value pairs separated by commas, got %q", flag, spec, field)
		}
		known := false
		for _, a := range allowed {
			known = known || a == k
		}
		if !known {
			return nil, usagef("%s %q: unknown key %q (kiln knows %s)", flag, spec, k, strings.Join(allowed, ", "))
		}
		out[k] = v
	}
	return out, nil
}

func parseCacheTo(specs []string) ([]remotecache.Target, error) {
	var out []remotecache.Target
	for _, spec := range specs {
		kv, err := parseCSV("--cache-to", spec, "type", "ref", "dest", "mode", "compression", "compression-level", "force-compression", "oci-mediatypes", "image-manifest", "ignore-error", "mounts")
		if err != nil {
			return nil, err
		}
		t := remotecache.Target{Type: kv["type"]}
		switch kv["mode"] {
		case "", "min":
		case "max":
			t.Max = true
		default:
			return nil, usagef("--cache-to %q: mode=%s: use min or max", spec, kv["mode"])
		}
		switch kv["mounts"] {
		case "", "false":
		case "true":
			t.Mounts = true
		default:
			return nil, usagef("--cache-to %q: mounts=%s: use true or false", spec, kv["mounts"])
		}
		switch t.Type {
		case "registry":
			if t.Ref = kv["ref"]; t.Ref == "" {
				return nil, usagef("--cache-to %q: type=registry needs ref=REGISTRY/REPOSITORY[:TAG]", spec)
			}
		case "local":
			if t.Dir = kv["dest"]; t.Dir == "" {
				return nil, usagef("--cache-to %q: type=local needs dest=DIR", spec)
			}
		case "inline":
			if t.Max {
				return nil, usagef("--cache-to %q: inline cache holds the image's own steps only: drop mode=max, or use type=registry", spec)
			}
			if t.Mounts {
				return nil, usagef("--cache-to %q: inline cache cannot carry cache mounts (they are no part of the image): drop mounts=true, or use type=registry or type=local", spec)
			}
		default:
			return nil, usagef("--cache-to %q: type=%s: use registry, local or inline", spec, t.Type)
		}
		out = append(out, t)
	}
	return out, nil
}

func parseCacheFrom(specs []string) ([]remotecache.Source, error) {
	var out []remotecache.Source
	for _, spec := range specs {
		if !strings.Contains(spec, "=") {
			// buildx: a bare reference is a registry cache
			out = append(out, remotecache.Source{Type: "registry", Ref: spec})
			continue
		}
		kv, err := parseCSV("--cache-from", spec, "type", "ref", "src", "digest", "tag")
		if err != nil {
			return nil, err
		}
		s := remotecache.Source{Type: kv["type"]}
		switch s.Type {
		case "registry":
			if s.Ref = kv["ref"]; s.Ref == "" {
				return nil, usagef("--cache-from %q: type=registry needs ref=REGISTRY/REPOSITORY[:TAG]", spec)
			}
		case "local":
			if s.Dir = kv["src"]; s.Dir == "" {
				return nil, usagef("--cache-from %q: type=local needs src=DIR", spec)
			}
		default:
			return nil, usagef("--cache-from %q: type=%s: use registry or local", spec, s.Type)
		}
		out = append(out, s)
	}
	return out, nil
}

// cacheEntries are the steps a target exports: the target stage's chain
// (mode=min) or every step the build touched (mode=max).
func cacheEntries(steps []planner.StepResult, all bool) []remotecache.Entry {
	var out []remotecache.Entry
	for _, s := range steps {
		if all || s.Target {
			out = append(out, remotecache.Entry{Key: s.Key, Record: s.Record, Layer: s.Layer})
		}
	}
	return out
}

// inlineConfig adds the target chain's records to the image config when
// --cache-to type=inline is asked for.
func inlineConfig(targets []remotecache.Target, res *planner.Result) ([]byte, error) {
	for _, t := range targets {
		if t.Type == "inline" {
			return remotecache.InlineConfig(res.RawConfig, cacheEntries(res.Steps, false))
		}
	}
	return res.RawConfig, nil
}

// exportCaches writes the registry and local targets. A failure is a
// warning: the image is built and pushed, and a cache can only make the
// next build faster.
func exportCaches(ctx context.Context, res *registry.Resolver, store *cache.Store, targets []remotecache.Target, steps []planner.StepResult, remote planner.RemoteRecords, msgs io.Writer) {
	// Each cache mount is turned into layers once, whatever the targets.
	var snapped map[string]remotecache.Mount
	mountsOf := func(all bool) []remotecache.Mount {
		if snapped == nil {
			imported, _ := remote.(*remotecache.Records)
			var ids []string
			for _, s := range steps {
				ids = append(ids, s.CacheMounts...)
			}
			snapped = map[string]remotecache.Mount{}
			sctx, span := trace.Start(ctx, "snapshot cache mounts")
			for _, m := range remotecache.SnapshotMounts(sctx, store, ids, imported, func(msg string) {
				fmt.Fprintf(msgs, "warning: %s; the cache is exported without it\n", msg)
			}) {
				snapped[m.ID] = m
			}
			span.End()
		}
		var out []remotecache.Mount
		seen := map[string]bool{}
		for _, s := range steps {
			if !all && !s.Target {
				continue
			}
			for _, id := range s.CacheMounts {
				if m, ok := snapped[id]; ok && !seen[id] {
					seen[id] = true
					out = append(out, m)
				}
			}
		}
		return out
	}
	for _, t := range targets {
		if t.Type == "inline" {
			continue
		}
		var mounts []remotecache.Mount
		if t.Mounts {
			mounts = mountsOf(t.Max)
		}
		tctx, span := trace.Start(ctx, "export cache to "+t.String())
		r, err := remotecache.Export(tctx, res, store, t, cacheEntries(steps, t.Max), mounts)
		span.SetError(err)
		span.End()
		switch {
		case err != nil:
			fmt.Fprintf(msgs, "warning: exporting cache to %s: %v (the build succeeded; the cache there is the one before this build)\n", t, err)
		case r.Unchanged:
			fmt.Fprintf(msgs, "cache %s unchanged: %s (%d records%s)\n", t, r.Digest, r.Records, mountsNote(r.Mounts))
		default:
			fmt.Fprintf(msgs, "cache exported to %s: %s (%d records%s)\n", t, r.Digest, r.Records, mountsNote(r.Mounts))
		}
	}
}

func mountsNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", %d cache mounts", n)
}

// importCaches reads every --cache-from; nil when there is none.
func importCaches(ctx context.Context, res *registry.Resolver, sources []remotecache.Source, msgs io.Writer) planner.RemoteRecords {
	if len(sources) == 0 {
		return nil
	}
	recs := remotecache.Import(ctx, res, sources, func(msg string) {
		fmt.Fprintf(msgs, "warning: %s; the build goes on without it\n", msg)
	})
	return recs
}

// notePushed tells the resolver where the layers of the pushed image now
// live, so that a cache export to another repository of the same registry
// mounts them instead of uploading them again.
func notePushed(o *registryOptions, layers []cache.LayerInfo) {
	if o.res == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range o.pushed {
		for _, n := range p.names {
			ref, err := o.res.Parse(n)
			if err != nil {
				continue
			}
			at := ref.Context().Digest(p.digest.String())
			for _, l := range layers {
				o.res.AddSource(l.Digest, at)
			}
		}
	}
}

func anyLazy(layers []cache.LayerInfo) bool {
	for _, l := range layers {
		if l.Lazy() {
			return true
		}
	}
	return false
}
