package serve

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ImageBackend serves the image endpoints: it owns the store, resolves
// names and does the work; the handlers only decode and encode. Errors
// made with NotFound, Conflict or Invalid answer 404, 409 or 400.
type ImageBackend interface {
	// Images lists the store's images, one per image ID, with all
	// their names.
	Images(ctx context.Context) ([]ImageSummary, error)
	// InspectImage describes the image ref names: a tag, a digest
	// reference, a full or short image ID, resolved as dockerd does.
	InspectImage(ctx context.Context, ref string) (ImageInspect, error)
	// ImageHistory is the image's config history, newest first.
	ImageHistory(ctx context.Context, ref string) ([]HistoryItem, error)
	// TagImage gives the image ref names the name newName (normalised
	// by the backend; a malformed one is Invalid).
	TagImage(ctx context.Context, ref, newName string) error
	// RemoveImage removes a name, or every name of an image ID, as
	// docker rmi does.
	RemoveImage(ctx context.Context, ref string, force, noPrune bool) ([]DeleteItem, error)
	// SaveImages writes the images refs name as one docker-save tar to
	// w. It resolves every ref before it writes anything.
	SaveImages(ctx context.Context, refs []string, w io.Writer) error
	// LoadImages stores the images of a docker-save or OCI archive and
	// returns the names loaded (familiar spelling).
	LoadImages(ctx context.Context, archive io.Reader) ([]string, error)
	// PruneBuildCache removes build cache as kiln prune does. The
	// server calls it while no request of its own has scratch in the
	// store (see Server.HoldScratch).
	PruneBuildCache(ctx context.Context, opts BuildPruneOptions) (BuildPruneReport, error)
	// DiskUsage describes what the store holds.
	DiskUsage(ctx context.Context) (DiskUsage, error)
}

// NotFound marks err as the answer 404: what was asked for does not exist.
func NotFound(err error) error { return &statusError{http.StatusNotFound, err} }

// Conflict marks err as the answer 409: the request conflicts with the
// store's state (an image ID with several names, without force).
func Conflict(err error) error { return &statusError{http.StatusConflict, err} }

// Invalid marks err as the answer 400: the request itself is wrong.
func Invalid(err error) error { return badRequest(err) }

// ImageSummary is one image of GET /images/json, dockerd's shape.
type ImageSummary struct {
	ID          string `json:"Id"`
	ParentID    string `json:"ParentId"`
	RepoTags    []string
	RepoDigests []string
	// Created is the image config's creation time, in Unix seconds.
	Created     int64
	Size        int64
	SharedSize  int64
	VirtualSize int64
	Labels      map[string]string
	Containers  int64
}

// ImageInspect is GET /images/{name}/json, dockerd's shape.
type ImageInspect struct {
	ID              string `json:"Id"`
	RepoTags        []string
	RepoDigests     []string
	Parent          string
	Comment         string
	Created         string
	Container       string
	ContainerConfig *v1.Config
	DockerVersion   string
	Author          string
	Config          *v1.Config
	Architecture    string
	Variant         string `json:",omitempty"`
	Os              string
	OsVersion       string `json:",omitempty"`
	Size            int64
	VirtualSize     int64
	GraphDriver     GraphDriver
	RootFS          RootFS
	Metadata        ImageMetadata
}

// GraphDriver names the storage of an image; kiln's is overlayfs.
type GraphDriver struct {
	Name string
	Data map[string]string
}

// RootFS lists an image's layers by diffID.
type RootFS struct {
	Type   string
	Layers []string
}

// ImageMetadata is what the store knows of an image beyond its config.
type ImageMetadata struct {
	// LastTagTime is when a name was last given to the image, RFC 3339.
	LastTagTime string `json:",omitempty"`
}

// HistoryItem is one entry of GET /images/{name}/history.
type HistoryItem struct {
	ID        string `json:"Id"`
	Created   int64
	CreatedBy string
	Tags      []string
	Size      int64
	Comment   string
}

// DeleteItem is one line of DELETE /images/{name}: a name removed
// (Untagged) or an image gone (Deleted).
type DeleteItem struct {
	Untagged string `json:",omitempty"`
	Deleted  string `json:",omitempty"`
}

// BuildPruneOptions is POST /build/prune, decoded.
type BuildPruneOptions struct {
	All bool
	// Until: only what was unused for that long (0: any age), as
	// kiln prune --filter until=.
	Until time.Duration
	// KeepStorage: bytes of build cache to keep (0: no bound).
	KeepStorage int64
}

// BuildPruneReport is POST /build/prune's answer, dockerd's shape.
type BuildPruneReport struct {
	CachesDeleted  []string
	SpaceReclaimed int64
}

// DiskUsage is GET /system/df's answer, dockerd's shape.
type DiskUsage struct {
	LayersSize int64
	Images     []ImageSummary
	Containers []struct{}
	Volumes    []struct{}
	BuildCache []BuildCacheRecord
}

// BuildCacheRecord is one entry of the build cache in GET /system/df.
type BuildCacheRecord struct {
	ID          string
	Parent      string `json:",omitempty"`
	Type        string
	Description string
	InUse       bool
	Shared      bool
	Size        int64
	CreatedAt   string
	LastUsedAt  string `json:",omitempty"`
	UsageCount  int
}

// imageState is the server's part for the image endpoints.
type imageState struct {
	backend ImageBackend
	// scratch is held shared by each request that has files in the
	// store's tmp (a build's context, a load's archive) and exclusively
	// by a prune, which empties tmp. The store's lock keeps prune and
	// the builds of other processes apart, and this server's builds once
	// they opened the store, but not the context a build unpacks before.
	scratch sync.RWMutex
}

// SetImages serves the image endpoints, /build/prune and /system/df from
// b. Without it they answer 501.
func (s *Server) SetImages(b ImageBackend) { s.images.backend = b }

// HoldScratch keeps POST /build/prune from emptying the store's tmp
// until the returned func is called: a handler that writes there (a
// build unpacking its context) holds it for as long as its files are
// there. Prunes wait for holders; holders wait for a prune under way.
func (s *Server) HoldScratch() (release func()) {
	s.images.scratch.RLock()
	return s.images.scratch.RUnlock
}

// lockScratch takes the scratch space for a prune, calling wait first
// when requests hold it; it gives up when ctx is done.
func (s *Server) lockScratch(ctx context.Context, wait func()) (unlock func(), err error) {
	if s.images.scratch.TryLock() {
		return s.images.scratch.Unlock, nil
	}
	wait()
	// Polling, as the store's lock does, so that a client going away
	// stops the wait.
	for tick := 10 * time.Millisecond; ; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(tick):
		}
		if s.images.scratch.TryLock() {
			return s.images.scratch.Unlock, nil
		}
		if tick < 500*time.Millisecond {
			tick *= 2
		}
	}
}

// imageRoutes adds the image endpoints; they answer 501 until SetImages.
func (s *Server) imageRoutes() {
	s.handle("GET", "/images/json", s.imagesHandler(s.listImages))
	s.handle("GET", "/images/get", s.imagesHandler(s.saveImages))
	s.handle("POST", "/images/load", s.imagesHandler(s.loadImages))
	s.handle("GET", "/images/{name:*}/json", s.imagesHandler(s.inspectImage))
	s.handle("GET", "/images/{name:*}/history", s.imagesHandler(s.imageHistory))
	s.handle("GET", "/images/{name:*}/get", s.imagesHandler(s.saveImage))
	s.handle("POST", "/images/{name:*}/tag", s.imagesHandler(s.tagImage))
	s.handle("DELETE", "/images/{name:*}", s.imagesHandler(s.removeImage))
	s.handle("POST", "/build/prune", s.imagesHandler(s.pruneBuildCache))
	s.handle("GET", "/system/df", s.imagesHandler(s.diskUsage))
}

func (s *Server) imagesHandler(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
		if s.images.backend == nil {
			return &statusError{http.StatusNotImplemented,
				fmt.Errorf("kiln serves builds and images only: %s %s is not implemented by this server", r.Method, r.URL.Path)}
		}
		return h(w, r, vars)
	}
}

// parseFilters reads dockerd's filters parameter: {"key":{"value":true}},
// or the older {"key":["value"]}. Keys not in allowed are refused, as
// dockerd refuses them.
func parseFilters(raw string, allowed ...string) (map[string][]string, error) {
	out := map[string][]string{}
	if raw == "" {
		return out, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, badRequest(fmt.Errorf("invalid query parameter filters: want a JSON object such as {\"reference\":{\"app\":true}}: %w", err))
	}
	for k, v := range m {
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			return nil, badRequest(fmt.Errorf("invalid filter '%s': this endpoint takes %s", k, strings.Join(allowed, ", ")))
		}
		var set map[string]bool
		if err := json.Unmarshal(v, &set); err == nil {
			for val, on := range set {
				if on {
					out[k] = append(out[k], val)
				}
			}
			continue
		}
		var list []string
		if err := json.Unmarshal(v, &list); err != nil {
			return nil, badRequest(fmt.Errorf("invalid query parameter filters: the value of %q is neither {\"VALUE\":true} nor [\"VALUE\"]", k))
		}
		out[k] = append(out[k], list...)
	}
	return out, nil
}

// imageFilter is the filters of GET /images/json.
type imageFilter struct {
	references []string
	dangling   *bool
	labels     []string
}

func parseImageFilter(raw string) (imageFilter, error) {
	var f imageFilter
	m, err := parseFilters(raw, "reference", "dangling", "label")
	if err != nil {
		return f, err
	}
	f.references, f.labels = m["reference"], m["label"]
	for _, p := range f.references {
		if _, err := path.Match(p, ""); err != nil {
			return f, badRequest(fmt.Errorf("invalid filter reference=%q: %w", p, err))
		}
	}
	for _, v := range m["dangling"] {
		var d bool
		switch strings.ToLower(v) {
		case "true", "1":
			d = true
		case "false", "0":
		default:
			return f, badRequest(fmt.Errorf("invalid filter dangling=%q: want true or false", v))
		}
		if f.dangling != nil && *f.dangling != d {
			return f, badRequest(errors.New("invalid filter dangling: give true or false, not both"))
		}
		f.dangling = &d
	}
	return f, nil
}

// match reports whether img passes the filter. An image with no name
// shown (an untagged build's) is dangling. A reference pattern matches a
// name with or without its tag, as dockerd's does.
func (f imageFilter) match(img ImageSummary) (ImageSummary, bool) {
	if f.dangling != nil && *f.dangling {
		return img, len(img.RepoTags) == 0
	}
	for _, l := range f.labels {
		k, v, hasValue := strings.Cut(l, "=")
		got, ok := img.Labels[k]
		if !ok || hasValue && got != v {
			return img, false
		}
	}
	if len(f.references) == 0 {
		return img, true
	}
	var tags []string
	for _, t := range img.RepoTags {
		repo := t
		if i := strings.LastIndexByte(t, ':'); i > strings.LastIndexByte(t, '/') {
			repo = t[:i]
		}
		for _, p := range f.references {
			if m, _ := path.Match(p, t); m {
				tags = append(tags, t)
				break
			}
			if m, _ := path.Match(p, repo); m {
				tags = append(tags, t)
				break
			}
		}
	}
	// dockerd lists only the names that matched.
	img.RepoTags = tags
	return img, len(tags) > 0
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	f, err := parseImageFilter(r.URL.Query().Get("filters"))
	if err != nil {
		return err
	}
	all, err := s.images.backend.Images(r.Context())
	if err != nil {
		return err
	}
	out := []ImageSummary{}
	for _, img := range all {
		if img, ok := f.match(img); ok {
			out = append(out, img)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) inspectImage(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	img, err := s.images.backend.InspectImage(r.Context(), vars["name"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, img)
	return nil
}

func (s *Server) imageHistory(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	h, err := s.images.backend.ImageHistory(r.Context(), vars["name"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

// tagQuery makes the new name of POST /images/{name}/tag from repo and
// tag, as dockerd: the tag defaults to latest, and repo may not carry a
// tag of its own when tag is given.
func tagQuery(q map[string][]string) (string, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	repo, tag := get("repo"), get("tag")
	if repo == "" {
		return "", badRequest(errors.New("invalid query parameter repo: give the repository to tag into, such as repo=app&tag=1.0"))
	}
	if strings.Contains(repo, "@") {
		return "", badRequest(fmt.Errorf("invalid query parameter repo=%q: a digest cannot be a name; give a repository", repo))
	}
	if tag == "" {
		return repo, nil
	}
	last := repo[strings.LastIndexByte(repo, '/')+1:]
	if strings.Contains(last, ":") {
		return "", badRequest(fmt.Errorf("invalid query parameter repo=%q: it has a tag, and tag=%q gives another; give one", repo, tag))
	}
	return repo + ":" + tag, nil
}

func (s *Server) tagImage(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ref, err := tagQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if err := s.images.backend.TagImage(r.Context(), vars["name"], ref); err != nil {
		return err
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	q := r.URL.Query()
	items, err := s.images.backend.RemoveImage(r.Context(), vars["name"], boolValue(q.Get("force")), boolValue(q.Get("noprune")))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, items)
	return nil
}

func (s *Server) saveImage(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	return s.save(w, r, []string{vars["name"]})
}

func (s *Server) saveImages(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	names := r.URL.Query()["names"]
	if len(names) == 0 {
		return badRequest(errors.New("invalid query parameter names: give the images to save, names=app:1.0&names=…"))
	}
	return s.save(w, r, names)
}

// save streams the archive. An error before the first byte is a JSON
// error answer; after it, the stream is cut short, as dockerd does.
func (s *Server) save(w http.ResponseWriter, r *http.Request, names []string) error {
	tw := &tarAnswer{w: w}
	err := s.images.backend.SaveImages(r.Context(), names, tw)
	if err != nil && !tw.started {
		return err
	}
	if !tw.started {
		tw.start()
	}
	return nil
}

// tarAnswer sends the tar answer's header with its first byte.
type tarAnswer struct {
	w       http.ResponseWriter
	started bool
}

func (t *tarAnswer) start() {
	t.started = true
	t.w.Header().Set("Content-Type", "application/x-tar")
	t.w.WriteHeader(http.StatusOK)
}

func (t *tarAnswer) Write(p []byte) (int, error) {
	if !t.started {
		t.start()
	}
	return t.w.Write(p)
}

// archiveBody is a load's body, gunzipped when it is gzip: docker load
// accepts a compressed docker save.
func archiveBody(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, badRequest(fmt.Errorf("reading the archive: %w (send a docker save or OCI archive, plain or gzip compressed)", err))
		}
		return zr, nil
	}
	return br, nil
}

func (s *Server) loadImages(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	body, err := archiveBody(r.Body)
	if err != nil {
		return err
	}
	// the archive is spooled in the store's tmp
	defer s.HoldScratch()()
	names, err := s.images.backend.LoadImages(r.Context(), body)
	if err != nil {
		return err
	}
	st := newStream(w)
	for _, n := range names {
		st.send(streamMessage{Stream: "Loaded image: " + n + "\n"})
	}
	if len(names) == 0 {
		// an answer with no message would leave the client's decoder
		// waiting for one
		st.send(streamMessage{Stream: "Loaded no image\n"})
	}
	return nil
}

func (s *Server) pruneBuildCache(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	opts, err := buildPruneQuery(r.URL.Query())
	if err != nil {
		return err
	}
	unlock, err := s.lockScratch(r.Context(), func() {
		fmt.Fprintln(os.Stderr, "kiln serve: POST /build/prune waits for the builds and loads using the store to finish")
	})
	if err != nil {
		return fmt.Errorf("waiting for the requests using the store: %w", err)
	}
	defer unlock()
	rep, err := s.images.backend.PruneBuildCache(r.Context(), opts)
	if err != nil {
		return err
	}
	if rep.CachesDeleted == nil {
		rep.CachesDeleted = []string{}
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// buildPruneQuery decodes POST /build/prune: all, keep-storage (bytes)
// and the until filter (also BuildKit's unused-for), which are what
// kiln prune does.
func buildPruneQuery(q map[string][]string) (BuildPruneOptions, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	opts := BuildPruneOptions{All: boolValue(get("all"))}
	if v := get("keep-storage"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return opts, badRequest(fmt.Errorf("invalid query parameter keep-storage=%q: want a number of bytes", v))
		}
		opts.KeepStorage = n
	}
	f, err := parseFilters(get("filters"), "until", "unused-for")
	if err != nil {
		return opts, err
	}
	for _, k := range []string{"until", "unused-for"} {
		for _, v := range f[k] {
			d, err := parseDuration(v)
			if err != nil {
				return opts, badRequest(fmt.Errorf("invalid filter %s=%q: %w", k, v, err))
			}
			opts.Until = d
		}
	}
	return opts, nil
}

func (s *Server) diskUsage(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	du, err := s.images.backend.DiskUsage(r.Context())
	if err != nil {
		return err
	}
	if du.Images == nil {
		du.Images = []ImageSummary{}
	}
	if du.BuildCache == nil {
		du.BuildCache = []BuildCacheRecord{}
	}
	du.Containers, du.Volumes = []struct{}{}, []struct{}{}
	writeJSON(w, http.StatusOK, du)
	return nil
}

// parseDuration reads a Go duration (24h), or a number of days (7d),
// which the docker CLI's help suggests and Go's parser lacks.
func parseDuration(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.ParseFloat(days, 64); err == nil && n > 0 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errors.New("want a duration such as 24h or 7d")
	}
	return d, nil
}
