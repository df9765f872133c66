package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/internal/ctxio"
	"github.com/kiln-build/kiln/serve"
)

// serveImages answers kiln serve's image endpoints from the store kiln
// serve holds open for as long as it serves: its shared lock is what
// keeps another process's Open from clearing ROOT/tmp under a load, and
// prune must convert that same lock (a second Store of this process
// would wait for the first one's lock forever). The server keeps its
// own requests' scratch away from a prune (serve.Server.HoldScratch).
type serveImages struct {
	store *cache.Store
}

func newServeImages(s *cache.Store) *serveImages {
	storeConfigure(s)
	return &serveImages{store: s}
}

// storeImage is one image of the store with its names.
type storeImage struct {
	id      v1.Hash
	entries []cache.ImageEntry // the names with this ID, sorted
	// name is the normalised name ref gave, "" when it gave an ID or
	// a digest.
	name string
}

// groupImages gathers the entries by image ID, in the order of first
// appearance.
func groupImages(entries []cache.ImageEntry) []storeImage {
	var out []storeImage
	at := map[v1.Hash]int{}
	for _, e := range entries {
		i, ok := at[e.ID]
		if !ok {
			i = len(out)
			at[e.ID] = i
			out = append(out, storeImage{id: e.ID})
		}
		out[i].entries = append(out[i].entries, e)
	}
	return out
}

// shortID is the ID part of a reference that names an image by ID: a
// full or abbreviated hex, with or without sha256:.
var shortID = regexp.MustCompile(`^(?:sha256:)?([0-9a-f]{1,64})$`)

// resolve finds the image ref names, as dockerd does: a name (a tag, or
// a repository meaning its latest tag), a digest reference, then a full
// or unambiguous abbreviated image ID.
func (b *serveImages) resolve(ref string) (storeImage, error) {
	notFound := serve.NotFound(fmt.Errorf("No such image: %s", ref))
	entries, err := b.store.Images()
	if err != nil {
		return storeImage{}, fmt.Errorf("listing the images in the store: %w", err)
	}
	groups := groupImages(entries)
	byID := func(id v1.Hash) (storeImage, bool) {
		for _, g := range groups {
			if g.id == id {
				return g, true
			}
		}
		return storeImage{}, false
	}
	if strings.Contains(ref, "@") {
		img, ok, err := b.store.Image(ref)
		if err != nil || !ok {
			return storeImage{}, notFound
		}
		id, err := img.ConfigName()
		if err != nil {
			return storeImage{}, fmt.Errorf("reading image %s: %w", ref, err)
		}
		if g, ok := byID(id); ok {
			return g, nil
		}
		return storeImage{}, notFound
	}
	full := strings.HasPrefix(ref, "sha256:")
	if !full {
		if n, err := cache.NormalizeImageName(ref); err == nil {
			for _, e := range entries {
				if e.Name == n {
					g, _ := byID(e.ID)
					g.name = n
					return g, nil
				}
			}
		}
	}
	m := shortID.FindStringSubmatch(ref)
	if m == nil {
		return storeImage{}, notFound
	}
	var found []storeImage
	for _, g := range groups {
		if strings.HasPrefix(g.id.Hex, m[1]) {
			found = append(found, g)
		}
	}
	if len(found) != 1 {
		// none, or an ambiguous prefix: dockerd finds no image either
		return storeImage{}, notFound
	}
	return found[0], nil
}

// image reads the image's manifest and config from the store.
func (b *serveImages) image(g storeImage) (v1.Image, *v1.ConfigFile, error) {
	n := g.name
	if n == "" {
		n = g.entries[0].Name
	}
	img, ok, err := b.store.Image(n)
	if err == nil && !ok {
		err = cache.ErrImageNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading image %s: %w", cache.FamiliarImageName(n), err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the config of %s: %w", cache.FamiliarImageName(n), err)
	}
	return img, cfg, nil
}

// hiddenRepo holds the images of POST /build requests without a tag:
// kiln's store keeps named images only, and a client that builds without
// -t still finds its image by ID (docker tag $(docker build -q .) app),
// as dockerd keeps it untagged. The name is never shown: such an image
// lists as untagged (dangling), and goes with its last shown name.
const hiddenRepo = "untagged.kiln.invalid/build"

// untaggedName is the hidden name of one untagged build.
func untaggedName() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hiddenRepo + ":" + hex.EncodeToString(b)
}

// hiddenName reports whether n (normalised) is an untagged build's.
func hiddenName(n string) bool { return strings.HasPrefix(n, hiddenRepo+":") }

func (g storeImage) tags() []string {
	tags := make([]string, 0, len(g.entries))
	for _, e := range g.entries {
		if !hiddenName(e.Name) {
			tags = append(tags, cache.FamiliarImageName(e.Name))
		}
	}
	return tags
}

// repoDigests names each repository's manifest by digest, as dockerd
// does for an image it pulled or pushed: every name kiln keeps has one.
func (g storeImage) repoDigests() []string {
	out := []string{}
	for _, e := range g.entries {
		if hiddenName(e.Name) {
			continue
		}
		repo, _ := storeSplitTag(cache.FamiliarImageName(e.Name))
		if d := repo + "@" + e.Digest.String(); !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

func (b *serveImages) summary(g storeImage) (serve.ImageSummary, error) {
	_, cfg, err := b.image(g)
	if err != nil {
		return serve.ImageSummary{}, err
	}
	size := g.entries[0].Size
	var created int64
	if !cfg.Created.IsZero() {
		created = cfg.Created.Unix()
	}
	return serve.ImageSummary{
		ID:          g.id.String(),
		RepoTags:    g.tags(),
		RepoDigests: g.repoDigests(),
		Created:     created,
		Size:        size,
		// dockerd 20.10 answers -1 for what it did not compute
		SharedSize:  -1,
		VirtualSize: size,
		Labels:      cfg.Config.Labels,
		Containers:  -1,
	}, nil
}

func (b *serveImages) Images(ctx context.Context) ([]serve.ImageSummary, error) {
	entries, err := b.store.Images()
	if err != nil {
		return nil, fmt.Errorf("listing the images in the store: %w", err)
	}
	var out []serve.ImageSummary
	for _, g := range groupImages(entries) {
		s, err := b.summary(g)
		if err != nil {
			// removed or damaged meanwhile: kiln images skips it too
			b.store.Warn(fmt.Sprintf("skipping an image in GET /images/json: %v", err))
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

func (b *serveImages) InspectImage(ctx context.Context, ref string) (serve.ImageInspect, error) {
	g, err := b.resolve(ref)
	if err != nil {
		return serve.ImageInspect{}, err
	}
	img, cfg, err := b.image(g)
	if err != nil {
		return serve.ImageInspect{}, err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return serve.ImageInspect{}, fmt.Errorf("reading the config of %s: %w", ref, err)
	}
	// go-containerregistry's ConfigFile has no comment field
	var extra struct {
		Comment string `json:"comment"`
	}
	json.Unmarshal(raw, &extra)
	layers := make([]string, 0, len(cfg.RootFS.DiffIDs))
	for _, d := range cfg.RootFS.DiffIDs {
		layers = append(layers, d.String())
	}
	var tagged time.Time
	for _, e := range g.entries {
		if e.Created.After(tagged) {
			tagged = e.Created
		}
	}
	config := cfg.Config
	return serve.ImageInspect{
		ID:              g.id.String(),
		RepoTags:        g.tags(),
		RepoDigests:     g.repoDigests(),
		Comment:         extra.Comment,
		Created:         cfg.Created.UTC().Format(time.RFC3339Nano),
		Container:       cfg.Container,
		ContainerConfig: &v1.Config{},
		DockerVersion:   cfg.DockerVersion,
		Author:          cfg.Author,
		Config:          &config,
		Architecture:    cfg.Architecture,
		Variant:         cfg.Variant,
		Os:              cfg.OS,
		OsVersion:       cfg.OSVersion,
		Size:            g.entries[0].Size,
		VirtualSize:     g.entries[0].Size,
		GraphDriver:     serve.GraphDriver{Name: "overlayfs", Data: map[string]string{}},
		RootFS:          serve.RootFS{Type: "layers", Layers: layers},
		Metadata:        serve.ImageMetadata{LastTagTime: tagged.UTC().Format(time.RFC3339Nano)},
	}, nil
}

func (b *serveImages) ImageHistory(ctx context.Context, ref string) ([]serve.HistoryItem, error) {
	g, err := b.resolve(ref)
	if err != nil {
		return nil, err
	}
	img, cfg, err := b.image(g)
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the manifest of %s: %w", ref, err)
	}
	history := cfg.History
	if len(history) == 0 {
		// an image written without history: one entry per layer
		for range m.Layers {
			history = append(history, v1.History{Created: cfg.Created})
		}
	}
	items := make([]serve.HistoryItem, 0, len(history))
	layer := 0
	for _, h := range history {
		it := serve.HistoryItem{ID: "<missing>", Created: h.Created.Unix(), CreatedBy: h.CreatedBy, Comment: h.Comment}
		if !h.EmptyLayer && layer < len(m.Layers) {
			it.Size = m.Layers[layer].Size
			layer++
		}
		items = append(items, it)
	}
	slices.Reverse(items)
	items[0].ID = g.id.String()
	items[0].Tags = g.tags()
	return items, nil
}

func (b *serveImages) TagImage(ctx context.Context, ref, newName string) error {
	n, err := cache.NormalizeImageName(newName)
	if err != nil {
		return serve.Invalid(fmt.Errorf("tagging %s: %w: give a name such as app:1.0 or registry.example.com/team/app:1.0", ref, err))
	}
	g, err := b.resolve(ref)
	if err != nil {
		return err
	}
	img, _, err := b.image(g)
	if err != nil {
		return err
	}
	if err := b.store.PutImage(ctx, []string{n}, img); err != nil {
		return fmt.Errorf("tagging %s as %s: %w", ref, cache.FamiliarImageName(n), err)
	}
	return nil
}

func (b *serveImages) RemoveImage(ctx context.Context, ref string, force, noPrune bool) ([]serve.DeleteItem, error) {
	g, err := b.resolve(ref)
	if err != nil {
		return nil, err
	}
	names := []string{g.name}
	if g.name == "" {
		// By ID (or digest): every name goes, which dockerd does without
		// force only when they are all of one repository.
		repos := map[string]bool{}
		names = names[:0]
		byDigest, hasDigest := digestRef(ref)
		for _, e := range g.entries {
			repo, _ := storeSplitTag(e.Name)
			if hasDigest && (e.Digest != byDigest.digest || repo != byDigest.repo) {
				continue // a digest reference names its repository's names only
			}
			if !hiddenName(e.Name) {
				repos[repo] = true
			}
			names = append(names, e.Name)
		}
		if len(repos) > 1 && !force {
			short := g.id.Hex[:12]
			return nil, serve.Conflict(fmt.Errorf("conflict: unable to delete %s (must be forced) - image is referenced in multiple repositories: remove it by name, or with force (docker rmi -f)", short))
		}
	}
	var out []serve.DeleteItem
	for _, n := range names {
		if err := b.store.RemoveImage(n); errors.Is(err, cache.ErrImageNotFound) {
			continue // removed meanwhile
		} else if err != nil {
			return out, err
		}
		if !hiddenName(n) {
			out = append(out, serve.DeleteItem{Untagged: cache.FamiliarImageName(n)})
		}
	}
	// With its last shown name goes an untagged build's hidden one, as
	// dockerd deletes an image no tag names any more.
	if rest, err := b.resolve(g.id.String()); err == nil && len(rest.tags()) == 0 {
		for _, e := range rest.entries {
			if err := b.store.RemoveImage(e.Name); err != nil && !errors.Is(err, cache.ErrImageNotFound) {
				return out, err
			}
		}
	}
	// The image is gone with its last name; its layers stay in the build
	// cache until a prune finds them unused (noprune changes nothing).
	entries, err := b.store.Images()
	if err != nil {
		return out, fmt.Errorf("listing the images in the store: %w", err)
	}
	if !slices.ContainsFunc(entries, func(e cache.ImageEntry) bool { return e.ID == g.id }) {
		out = append(out, serve.DeleteItem{Deleted: g.id.String()})
	}
	return out, nil
}

// saveSet is what an archive holds: images by ID, each with the names it
// is saved under.
type saveSet struct {
	order []v1.Hash
	names map[v1.Hash][]string
	imgs  map[v1.Hash]v1.Image
}

func (b *serveImages) SaveImages(ctx context.Context, refs []string, w io.Writer) error {
	set := saveSet{names: map[v1.Hash][]string{}, imgs: map[v1.Hash]v1.Image{}}
	add := func(g storeImage, n string) error {
		if _, ok := set.imgs[g.id]; !ok {
			img, _, err := b.image(g)
			if err != nil {
				return err
			}
			set.order = append(set.order, g.id)
			set.imgs[g.id] = img
		}
		if n != "" && !slices.Contains(set.names[g.id], n) {
			set.names[g.id] = append(set.names[g.id], n)
		}
		return nil
	}
	entries, err := b.store.Images()
	if err != nil {
		return fmt.Errorf("listing the images in the store: %w", err)
	}
	for _, ref := range refs {
		// A repository without a tag saves all its tags, as docker save.
		if repo, ok := untaggedRepo(ref); ok {
			var found bool
			for _, g := range groupImages(entries) {
				for _, e := range g.entries {
					if r, _ := storeSplitTag(e.Name); r == repo {
						g.name = e.Name
						if err := add(g, e.Name); err != nil {
							return err
						}
						found = true
					}
				}
			}
			if found {
				continue
			}
		}
		g, err := b.resolve(ref)
		if err != nil {
			return err
		}
		if err := add(g, g.name); err != nil {
			return err
		}
	}
	if len(set.order) == 1 {
		// one image: the bytes kiln save writes
		id := set.order[0]
		out := export.Output{Type: "docker", Dest: export.StdoutDest, Tar: true, Stdout: w}
		if err := export.Write(ctx, set.imgs[id], out, set.names[id]); err != nil {
			return fmt.Errorf("saving %s: %w", strings.Join(refs, ", "), err)
		}
		return nil
	}
	// several: a docker-save archive with one manifest.json entry each
	m := map[name.Reference]v1.Image{}
	for _, id := range set.order {
		if len(set.names[id]) == 0 {
			d, err := name.NewDigest("kiln/untagged@" + id.String())
			if err != nil {
				return fmt.Errorf("saving %s: %w", id, err)
			}
			m[d] = set.imgs[id]
		}
		for _, n := range set.names[id] {
			t, err := name.NewTag(n)
			if err != nil {
				return fmt.Errorf("saving %s: %w", n, err)
			}
			m[t] = set.imgs[id]
		}
	}
	if err := tarball.MultiRefWrite(m, w); err != nil {
		return fmt.Errorf("saving %s: %w", strings.Join(refs, ", "), err)
	}
	return nil
}

type repoDigest struct {
	repo   string // normalised
	digest v1.Hash
}

// digestRef splits a digest reference (app@sha256:…) into its normalised
// repository and manifest digest.
func digestRef(ref string) (repoDigest, bool) {
	d, err := name.NewDigest(ref)
	if err != nil {
		return repoDigest{}, false
	}
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return repoDigest{}, false
	}
	n, err := cache.NormalizeImageName(d.Context().Name())
	if err != nil {
		return repoDigest{}, false
	}
	repo, _ := storeSplitTag(n)
	return repoDigest{repo: repo, digest: h}, true
}

// untaggedRepo is the normalised repository of ref when ref names a
// repository without a tag, digest or ID.
func untaggedRepo(ref string) (string, bool) {
	if strings.ContainsAny(ref, "@") || shortID.MatchString(ref) {
		return "", false
	}
	last := ref[strings.LastIndexByte(ref, '/')+1:]
	if strings.Contains(last, ":") {
		return "", false
	}
	n, err := cache.NormalizeImageName(ref)
	if err != nil {
		return "", false
	}
	repo, _ := storeSplitTag(n)
	return repo, true
}

func (b *serveImages) LoadImages(ctx context.Context, archive io.Reader) ([]string, error) {
	// The readers seek in the archive: it is spooled in the store's
	// scratch space, as kiln load -i - does, and read from there by the
	// same code (layers through the store's one tar applier).
	dir, err := b.store.TempDir("serve-load-")
	if err != nil {
		return nil, fmt.Errorf("loading: %w (check kiln serve's --root)", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "archive.tar")
	if err := spool(ctxio.Reader(ctx, archive), path); err != nil {
		return nil, serve.Invalid(fmt.Errorf("reading the archive from the request: %w", err))
	}
	entries, err := b.store.Load(ctx, path)
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), path, "the archive")
		return nil, serve.Invalid(fmt.Errorf("%s (send a docker save or OCI archive, plain or gzip compressed, whose images have names)", msg))
	}
	var names []string
	for _, e := range entries {
		names = append(names, cache.FamiliarImageName(e.Name))
	}
	return names, nil
}

func (b *serveImages) PruneBuildCache(ctx context.Context, opts serve.BuildPruneOptions) (serve.BuildPruneReport, error) {
	rep, err := b.store.Prune(ctx, cache.PruneOptions{
		All: opts.All, Until: opts.Until, KeepStorage: opts.KeepStorage,
		Wait: func() {
			fmt.Fprintf(os.Stderr, "kiln serve: POST /build/prune waits for the builds using %s to finish\n", b.store.Root)
		},
	})
	if err != nil {
		return serve.BuildPruneReport{}, fmt.Errorf("pruning the build cache: %w", err)
	}
	return serve.BuildPruneReport{SpaceReclaimed: rep.Reclaimed}, nil
}

func (b *serveImages) DiskUsage(ctx context.Context) (serve.DiskUsage, error) {
	du, err := b.store.DiskUsage()
	if err != nil {
		return serve.DiskUsage{}, fmt.Errorf("measuring the store: %w", err)
	}
	images, err := b.Images(ctx)
	if err != nil {
		return serve.DiskUsage{}, err
	}
	for i := range images {
		// df counts the containers using each image: kiln runs none
		images[i].Containers = 0
	}
	out := serve.DiskUsage{LayersSize: du.Layers.Size + du.Blobs.Size, Images: images}
	// kiln keeps no per-record build cache list: each kind of prunable
	// entry is one record, sized by what prune --all would free of it.
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, r := range []struct {
		id, typ, what string
		u             cache.Usage
		extra         int64
	}{
		{"layers", "regular", "layers no image uses (unpacked and compressed)", du.Layers, du.Blobs.Reclaimable},
		{"steps", "internal", "step records", du.Steps, 0},
		{"cachemounts", "exec.cachemount", "RUN --mount=type=cache", du.CacheMounts, 0},
		{"scratch", "internal", "scratch of running or killed builds", du.Tmp, 0},
	} {
		if size := r.u.Reclaimable + r.extra; size > 0 {
			out.BuildCache = append(out.BuildCache, serve.BuildCacheRecord{
				ID: "kiln-" + r.id, Type: r.typ, Description: fmt.Sprintf("%s (%d)", r.what, r.u.Count),
				Size: size, CreatedAt: now, UsageCount: r.u.Count,
			})
		}
	}
	sort.Slice(out.BuildCache, func(i, j int) bool { return out.BuildCache[i].ID < out.BuildCache[j].ID })
	return out, nil
}
