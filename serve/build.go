package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/kiln-build/kiln/contexthash"
	"github.com/kiln-build/kiln/source"
)

// DefaultMaxContextSize is the largest build context body POST /build
// reads unless kiln serve is told otherwise: 10 GiB.
const DefaultMaxContextSize int64 = 10 << 30

// BuildRequest is one POST /build, decoded: what kiln build is asked.
type BuildRequest struct {
	// ContextDir is the unpacked context, in the build's scratch space.
	ContextDir string
	// Dockerfile is the host path of the Dockerfile, copied out of the
	// context (a symlink in the context resolved inside it).
	Dockerfile string
	Tags       []string
	BuildArgs  map[string]string
	Labels     map[string]string
	Target     string
	NoCache    bool
	Pull       bool
	// Network is default, none or host.
	Network  string
	Platform string
	// Resources of each RUN step (0 = kiln build's default): Memory and
	// MemorySwap in bytes (MemorySwap -1 = unlimited swap), CPUShares
	// the relative weight, CPUs in cores (from cpuquota/cpuperiod),
	// ShmSize the size of /dev/shm in bytes.
	Memory, MemorySwap int64
	CPUShares          int64
	CPUs               float64
	ShmSize            int64
	// ExtraHosts are HOST:IP lines for RUN steps' /etc/hosts.
	ExtraHosts []string
	// CacheFrom are images whose inline cache the build may use, as
	// kiln build --cache-from REF.
	CacheFrom []string
	// Keychain holds the credentials of X-Registry-Config, the only
	// ones the build's pulls use (auth.go).
	Keychain authn.Keychain
}

// Builder runs a build as kiln build does, writing its plain progress
// text to progress, and returns the image ID (sha256:…). The server
// cancels ctx when the client goes away.
type Builder func(ctx context.Context, req BuildRequest, progress io.Writer) (imageID string, err error)

// BuildOptions configures POST /build.
type BuildOptions struct {
	// ScratchDir holds each build's unpacked context while it runs (the
	// store's tmp directory): created if missing.
	ScratchDir string
	// MaxContextSize limits the request body, in bytes; 0 means
	// DefaultMaxContextSize.
	MaxContextSize int64
	// HostNetwork lets a build ask for networkmode=host: kiln serve
	// was started with --allow network.host.
	HostNetwork bool
	// MaxConcurrent bounds the builds that run at once; more wait for a
	// turn (their clients see so). 0 means DefaultMaxConcurrentBuilds.
	MaxConcurrent int
	// ContextHashDir is where the builds keep their context hash state
	// (the store's contexthash directory). When set, the digests of the
	// context's files, computed as the context is unpacked, are left
	// there for the build (contexthash.Seed), which then reads none of
	// them again, and the state is removed with the context.
	ContextHashDir string
}

// SetBuilder makes POST /build run builds through b. Without it the
// endpoint answers 501.
func (s *Server) SetBuilder(b Builder, opts BuildOptions) {
	if opts.MaxContextSize <= 0 {
		opts.MaxContextSize = DefaultMaxContextSize
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = DefaultMaxConcurrentBuilds()
	}
	s.builder, s.buildOpts = b, opts
	s.buildSlots = make(chan struct{}, opts.MaxConcurrent)
	s.removals = make(chan struct{}, maxBackgroundRemovals)
	s.files = source.NewFilePool(opts.ScratchDir, FilePoolPrefix, maxPoolFiles)
	s.handle("POST", "/build", s.build)
}

// buildQuery decodes POST /build's query parameters as dockerd does;
// unknown ones are ignored.
func buildQuery(r *http.Request) (BuildRequest, string, bool, error) {
	q := r.URL.Query()
	req := BuildRequest{
		Tags:     q["t"],
		Target:   q.Get("target"),
		NoCache:  boolValue(q.Get("nocache")),
		Pull:     boolValue(q.Get("pull")),
		Platform: q.Get("platform"),
	}
	dockerfile := q.Get("dockerfile")
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	for _, t := range req.Tags {
		if t == "" || strings.ContainsAny(t, " \t\n") {
			return req, "", false, badRequest(fmt.Errorf("invalid query parameter t=%q: want a name such as app:1.0", t))
		}
	}
	if v := q.Get("buildargs"); v != "" {
		// dockerd takes null for an argument given without a value and
		// unset on the client: it is then not set at all.
		var m map[string]*string
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return req, "", false, badRequest(fmt.Errorf("invalid query parameter buildargs: want a JSON object of strings, such as {\"A\":\"b\"}: %w", err))
		}
		req.BuildArgs = map[string]string{}
		for k, val := range m {
			if k == "" {
				return req, "", false, badRequest(errors.New("invalid query parameter buildargs: an argument has an empty name"))
			}
			if val != nil {
				req.BuildArgs[k] = *val
			}
		}
	}
	if v := q.Get("labels"); v != "" {
		if err := json.Unmarshal([]byte(v), &req.Labels); err != nil {
			return req, "", false, badRequest(fmt.Errorf("invalid query parameter labels: want a JSON object of strings, such as {\"a\":\"b\"}: %w", err))
		}
	}
	if err := resourceQuery(q, &req); err != nil {
		return req, "", false, err
	}
	switch m := q.Get("networkmode"); m {
	case "", "default", "bridge":
		req.Network = "default"
	case "none", "host":
		req.Network = m
	default:
		return req, "", false, badRequest(fmt.Errorf("invalid query parameter networkmode=%q: kiln builds with default, none or host", m))
	}
	return req, dockerfile, boolValue(q.Get("q")), nil
}

// boolValue is dockerd's reading of a boolean query parameter.
func boolValue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "0", "no", "false", "none":
		return false
	}
	return true
}

// errContextTooLarge is the body passing the size limit.
var errContextTooLarge = errors.New("context too large")

// limitedBody fails once more than max bytes were read.
type limitedBody struct {
	r        io.Reader
	left     int64
	exceeded bool
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.exceeded = true
		return 0, errContextTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return n, errContextTooLarge
	}
	return n, err
}

func (s *Server) build(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	if !s.builds.enter() {
		return &statusError{http.StatusServiceUnavailable, errors.New("kiln serve is stopping: build again once it is back")}
	}
	// The build counts as in flight, and holds the scratch space, until
	// its scratch directory is gone: after the response (cleanScratch).
	releaseScratch := s.HoldScratch() // no prune empties tmp under the context
	var scratch, ctxDir string
	defer func() { s.cleanScratch(scratch, ctxDir, releaseScratch) }()
	req, dockerfile, quiet, err := buildQuery(r)
	if err != nil {
		return err
	}
	if req.Keychain, err = BuildKeychain(r.Header); err != nil {
		return err
	}
	if req.Network == "host" && !s.buildOpts.HostNetwork {
		return &statusError{http.StatusForbidden, errors.New("networkmode=host: this kiln serve does not grant builds the host's network; start it with --allow network.host, or build with the default network")}
	}
	if err := os.MkdirAll(s.buildOpts.ScratchDir, 0o700); err != nil {
		return fmt.Errorf("creating the scratch directory %s (check kiln serve's --root): %w", s.buildOpts.ScratchDir, err)
	}
	if scratch, err = os.MkdirTemp(s.buildOpts.ScratchDir, "serve-build-"); err != nil {
		return fmt.Errorf("creating the build's scratch directory (check kiln serve's --root): %w", err)
	}

	body := &limitedBody{r: r.Body, left: s.buildOpts.MaxContextSize}
	ctxDir = filepath.Join(scratch, "context")
	isTar, sums, err := source.ReadContextTarHashed(r.Context(), body, ctxDir, newContextChecker().check, s.files)
	if body.exceeded {
		return &statusError{http.StatusRequestEntityTooLarge,
			fmt.Errorf("the build context is larger than kiln serve's limit of %d bytes: make it smaller (.dockerignore) or raise kiln serve --max-context-size", s.buildOpts.MaxContextSize)}
	}
	if err != nil {
		return badRequest(fmt.Errorf("reading the build context: %w (send the context as a tar archive, plain or gzip, bzip2, xz or zstd compressed)", err))
	}
	if !isTar {
		return badRequest(errors.New("reading the build context: the request body is not a tar archive: send the context as a tar (plain or gzip, bzip2, xz or zstd compressed)"))
	}
	// Whatever follows the archive (tar padding) is not read, but the
	// body is drained within the limit so the connection can be reused.
	io.Copy(io.Discard, body)
	if req.Dockerfile, err = source.ContextFiles(ctxDir, dockerfile, filepath.Join(scratch, "dockerfile")); err != nil {
		return badRequest(fmt.Errorf("invalid query parameter dockerfile=%q: %w (name a Dockerfile inside the context)", dockerfile, err))
	}
	req.ContextDir = ctxDir
	if s.buildOpts.ContextHashDir != "" {
		// Failing to seed only costs reading the files again.
		_ = contexthash.Seed(s.buildOpts.ContextHashDir, ctxDir, sums)
	}

	st := newStream(w)
	var progress io.Writer = st
	if quiet {
		progress = io.Discard
	}
	release, err := s.buildTurn(r.Context(), progress)
	if err != nil {
		// the client left, or kiln serve is stopping
		msg := "waiting for a build slot: " + err.Error()
		st.send(streamMessage{Error: msg, ErrorDetail: &errorDetail{Message: msg}})
		return nil
	}
	defer release()
	id, err := s.builder(r.Context(), req, progress)
	st.flushLine()
	if err != nil {
		msg := err.Error()
		if r.Context().Err() != nil && s.cancelled.Load() {
			msg = "the build was cancelled: kiln serve is stopping and its --shutdown-timeout passed; build again once it is back"
		}
		st.send(streamMessage{Error: msg, ErrorDetail: &errorDetail{Message: msg}})
		return nil
	}
	st.send(streamMessage{Aux: &auxID{ID: id}})
	if quiet {
		st.send(streamMessage{Stream: id + "\n"})
		return nil
	}
	short := strings.TrimPrefix(id, "sha256:")
	if len(short) > 12 {
		short = short[:12]
	}
	st.send(streamMessage{Stream: "Successfully built " + short + "\n"})
	for _, t := range req.Tags {
		st.send(streamMessage{Stream: "Successfully tagged " + withTag(t) + "\n"})
	}
	return nil
}

// streamMessage is one of dockerd's JSON messages of a build.
type streamMessage struct {
	Stream      string       `json:"stream,omitempty"`
	Aux         *auxID       `json:"aux,omitempty"`
	ErrorDetail *errorDetail `json:"errorDetail,omitempty"`
	Error       string       `json:"error,omitempty"`
}

type auxID struct {
	ID string `json:"ID"`
}

type errorDetail struct {
	Message string `json:"message"`
}

// stream writes a build's JSON messages, one per line, flushed as they
// come so that clients show the progress live. As an io.Writer it cuts
// the progress text into lines, each a {"stream": …} message.
type stream struct {
	mu      sync.Mutex
	out     messages
	partial []byte
}

func newStream(w http.ResponseWriter) *stream {
	return &stream{out: newMessages(w)}
}

func (s *stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := strings.IndexByte(string(s.partial), '\n')
		if i < 0 {
			break
		}
		s.sendLocked(streamMessage{Stream: string(s.partial[:i+1])})
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

// flushLine sends a last line that has no newline.
func (s *stream) flushLine() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.partial) > 0 {
		s.sendLocked(streamMessage{Stream: string(s.partial) + "\n"})
		s.partial = nil
	}
}

func (s *stream) send(m streamMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendLocked(m)
}

func (s *stream) sendLocked(m streamMessage) { s.out.send(m) }

// withTag is name as dockerd prints it: with :latest when it has no tag
// or digest.
func withTag(name string) string {
	last := name[strings.LastIndexByte(name, '/')+1:]
	if strings.ContainsAny(last, ":@") {
		return name
	}
	return name + ":latest"
}
