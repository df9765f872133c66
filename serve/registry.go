package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/kiln-build/kiln/platform"
)

// RegistryBackend is what the registry endpoints (POST /auth, POST
// /images/{name}/push, POST /images/create) work with. The server's
// Backend provides it when it implements it; else they answer 501.
type RegistryBackend interface {
	// RegistryLogin checks a's credentials against a.ServerAddress
	// (Docker Hub when empty) as docker login does. A rejection wraps
	// ErrRegistryDenied.
	RegistryLogin(ctx context.Context, a AuthConfig) error
	// PushImage pushes the image named ref in the store to ref's
	// registry with the credentials of kc, reporting each layer to
	// progress. An image the store lacks is ErrUnknownImage (wrapped).
	PushImage(ctx context.Context, ref string, kc authn.Keychain, progress func(LayerProgress)) (Pushed, error)
	// PullImage fetches ref for platform (the server's when empty)
	// with the credentials of kc into the store, under ref, reporting
	// each layer to progress.
	PullImage(ctx context.Context, ref, platform string, kc authn.Keychain, progress func(LayerProgress)) (Pulled, error)
}

// Errors a RegistryBackend wraps to choose the answer's status.
var (
	// ErrUnknownImage is an image name the store does not have: 404.
	ErrUnknownImage = errors.New("no such image")
	// ErrRegistryDenied is a registry refusing credentials: POST /auth
	// answers 401.
	ErrRegistryDenied = errors.New("the registry refused the credentials")
)

// LayerState is where a layer is in a push or a pull.
type LayerState int

// The states of a layer, in order.
const (
	// LayerWaiting: to be transferred unless the other side has it.
	LayerWaiting LayerState = iota
	// LayerExists: the other side has it; nothing is transferred.
	LayerExists
	// LayerTransferring: bytes are moving (Current of Total).
	LayerTransferring
	// LayerDone: transferred (and, for a pull, unpacked).
	LayerDone
)

// LayerProgress is one layer's news.
type LayerProgress struct {
	// Digest is the layer's blob digest, sha256:….
	Digest string
	State  LayerState
	// Current and Total count the bytes of LayerTransferring.
	Current, Total int64
}

// Pushed is the outcome of PushImage.
type Pushed struct {
	// Digest is the manifest's, sha256:…; Size is the manifest's size.
	Digest string
	Size   int64
}

// Pulled is the outcome of PullImage.
type Pulled struct {
	// Digest is the manifest's, sha256:….
	Digest string
	// UpToDate is true when the store had this image under ref already.
	UpToDate bool
}

func (s *Server) registryRoutes() {
	s.handle("POST", "/auth", s.auth)
	s.handle("POST", "/images/create", s.imageCreate)
	s.handle("POST", "/images/{name:*}/push", s.imagePush)
}

// registryBackend is the server's RegistryBackend, or a 501.
func (s *Server) registryBackend(what string) (RegistryBackend, error) {
	if rb, ok := s.backend.(RegistryBackend); ok {
		return rb, nil
	}
	return nil, &statusError{http.StatusNotImplemented, fmt.Errorf("this kiln serve does not %s", what)}
}

// A push or pull that fails says so in its stream ({"error": …}) even
// before any progress, not by status: the docker CLI answers a 401 there
// by prompting for a password on its terminal, and waits. Only an image
// the store lacks is a status, 404, as dockerd's.

// POST /auth: docker login. The credentials are checked, not kept: the
// client keeps them and sends them with each push, pull and build.
func (s *Server) auth(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	rb, err := s.registryBackend("log in to registries")
	if err != nil {
		return err
	}
	var a AuthConfig
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&a); err != nil {
		return badRequest(errors.New("reading the credentials: the body is not a JSON object of credentials (username, password, serveraddress)"))
	}
	if a.Username == "" && a.Auth == "" {
		return badRequest(errors.New("logging in: no username: give docker login -u USER"))
	}
	if err := rb.RegistryLogin(r.Context(), a); err != nil {
		if errors.Is(err, ErrRegistryDenied) {
			return &statusError{http.StatusUnauthorized, err}
		}
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Status        string
		IdentityToken string `json:"IdentityToken,omitempty"`
	}{Status: "Login Succeeded"})
	return nil
}

// POST /images/{name}/push?tag=T: docker push.
func (s *Server) imagePush(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	rb, err := s.registryBackend("push images")
	if err != nil {
		return err
	}
	ref := vars["name"]
	if tag := r.URL.Query().Get("tag"); tag != "" {
		ref += ":" + tag
	}
	// As dockerd: a name without a tag is pushed as latest (dockerd
	// would push every tag of the repository; kiln pushes one image).
	n, err := name.ParseReference(ref)
	if err != nil {
		return badRequest(fmt.Errorf("invalid image name %q: %w (push a name such as registry.example.com/app:1.0)", ref, err))
	}
	if _, isDigest := n.(name.Digest); isDigest {
		return badRequest(fmt.Errorf("pushing %s: push a tag, not a digest", ref))
	}
	tag := n.Identifier()
	kc, err := requestKeychain(r, n)
	if err != nil {
		return err
	}

	ps := newProgressStream(w)
	var once sync.Once
	started := func() {
		once.Do(func() {
			ps.send(jsonMessage{Status: "The push refers to repository [" + dockerName(n.Context()) + "]"})
		})
	}
	res, err := rb.PushImage(r.Context(), ref, kc, func(p LayerProgress) {
		started()
		ps.layer(p, "Preparing", "Layer already exists", "Pushing", "Pushed")
	})
	if err != nil {
		if !ps.started() && errors.Is(err, ErrUnknownImage) {
			return &statusError{http.StatusNotFound, err}
		}
		ps.fail(err)
		return nil
	}
	started()
	ps.send(jsonMessage{Status: fmt.Sprintf("%s: digest: %s size: %d", tag, res.Digest, res.Size)})
	ps.send(jsonMessage{Aux: map[string]any{"Tag": tag, "Digest": res.Digest, "Size": res.Size}})
	return nil
}

// POST /images/create?fromImage=R&tag=T&platform=P: docker pull.
func (s *Server) imageCreate(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	q := r.URL.Query()
	if q.Get("fromSrc") != "" {
		return &statusError{http.StatusNotImplemented, errors.New("kiln serve does not import root filesystems (docker import): build FROM scratch with ADD of the tarball, or load an image with docker load")}
	}
	from := q.Get("fromImage")
	if from == "" {
		return badRequest(errors.New("invalid query parameter fromImage: give the image to pull, such as busybox"))
	}
	rb, err := s.registryBackend("pull images")
	if err != nil {
		return err
	}
	ref := from
	if tag := q.Get("tag"); tag != "" {
		sep := ":"
		if strings.HasPrefix(tag, "sha256:") {
			sep = "@"
		}
		ref += sep + tag
	}
	n, err := name.ParseReference(ref)
	if err != nil {
		return badRequest(fmt.Errorf("invalid image name %q: %w (pull a name such as busybox:1.36)", ref, err))
	}
	if _, isDigest := n.(name.Digest); isDigest {
		// kiln's store names images by tag; FROM NAME@DIGEST in a build
		// needs no pull.
		return badRequest(fmt.Errorf("pulling %s: kiln serve pulls tags, not digests: pull a tag, or build FROM %s directly", ref, ref))
	}
	if p := q.Get("platform"); p != "" {
		if _, err := platform.Parse(p); err != nil {
			return badRequest(fmt.Errorf("invalid query parameter platform=%q: %w (give OS/ARCH[/VARIANT], such as linux/arm64)", p, err))
		}
	}
	kc, err := requestKeychain(r, n)
	if err != nil {
		return err
	}

	ps := newProgressStream(w)
	var once sync.Once
	started := func() {
		once.Do(func() {
			// dockerd names the repository by its path here:
			// library/busybox, team/app.
			ps.send(jsonMessage{Status: "Pulling from " + n.Context().RepositoryStr(), ID: n.Identifier()})
		})
	}
	res, err := rb.PullImage(r.Context(), ref, q.Get("platform"), kc, func(p LayerProgress) {
		started()
		ps.layer(p, "Pulling fs layer", "Already exists", "Downloading", "Pull complete")
	})
	if err != nil {
		ps.fail(err)
		return nil
	}
	started()
	ps.send(jsonMessage{Status: "Digest: " + res.Digest})
	familiar := familiarRepo(n.Context()) + ":" + n.Identifier()
	if res.UpToDate {
		ps.send(jsonMessage{Status: "Status: Image is up to date for " + familiar})
	} else {
		ps.send(jsonMessage{Status: "Status: Downloaded newer image for " + familiar})
	}
	return nil
}

// dockerName is a repository as dockerd names it in push messages:
// docker.io/library/app, 127.0.0.1:5000/app.
func dockerName(r name.Repository) string {
	reg := r.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.RepositoryStr()
}

// familiarRepo is a repository as docker shows it: busybox for
// docker.io/library/busybox.
func familiarRepo(r name.Repository) string {
	n := dockerName(r)
	if rest, ok := strings.CutPrefix(n, "docker.io/"); ok {
		return strings.TrimPrefix(rest, "library/")
	}
	return n
}

// jsonMessage is one message of dockerd's JSON progress stream
// (pkg/jsonmessage), as the docker CLI and docker-py read it.
type jsonMessage struct {
	Status         string          `json:"status,omitempty"`
	ProgressDetail *progressDetail `json:"progressDetail,omitempty"`
	Progress       string          `json:"progress,omitempty"`
	ID             string          `json:"id,omitempty"`
	Aux            any             `json:"aux,omitempty"`
	ErrorDetail    *struct {
		Message string `json:"message"`
	} `json:"errorDetail,omitempty"`
	Error string `json:"error,omitempty"`
}

type progressDetail struct {
	Current int64 `json:"current,omitempty"`
	Total   int64 `json:"total,omitempty"`
}

// progressStream writes a push's or a pull's messages, one JSON object a
// line, flushed as they come. Layers report from several goroutines.
type progressStream struct {
	mu  sync.Mutex
	out messages
	// last is the state each layer was last reported in: a layer is
	// reported once per state, bar byte counts.
	last map[string]LayerState
}

func newProgressStream(w http.ResponseWriter) *progressStream {
	return &progressStream{out: newMessages(w), last: map[string]LayerState{}}
}

func (p *progressStream) started() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.started
}

func (p *progressStream) send(m jsonMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sendLocked(m)
}

func (p *progressStream) sendLocked(m jsonMessage) { p.out.send(m) }

// layer reports l with the words of its states, as dockerd's short ID
// (the first 12 hex digits of the digest).
func (p *progressStream) layer(l LayerProgress, waiting, exists, moving, done string) {
	id := strings.TrimPrefix(l.Digest, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, seen := p.last[id]
	if seen && prev >= l.State && !(prev == LayerTransferring && l.State == LayerTransferring) {
		return
	}
	p.last[id] = l.State
	m := jsonMessage{ID: id, ProgressDetail: &progressDetail{}}
	switch l.State {
	case LayerWaiting:
		m.Status = waiting
	case LayerExists:
		m.Status = exists
	case LayerTransferring:
		m.Status = moving
		m.ProgressDetail = &progressDetail{Current: l.Current, Total: l.Total}
	case LayerDone:
		m.Status = done
	}
	p.sendLocked(m)
}

// fail ends the stream with err, which makes the docker CLI print it and
// exit 1.
func (p *progressStream) fail(err error) {
	msg := err.Error()
	m := jsonMessage{Error: msg}
	m.ErrorDetail = &struct {
		Message string `json:"message"`
	}{msg}
	p.send(m)
}

// requestKeychain is the keychain of a push or pull: the credentials of
// its X-Registry-Auth, for the registry of n only.
func requestKeychain(r *http.Request, n name.Reference) (authn.Keychain, error) {
	auth, err := DecodeRegistryAuth(r.Header)
	if err != nil {
		return nil, err
	}
	kc, err := KeychainFor(n.Context().RegistryStr(), auth)
	if err != nil {
		return nil, badRequest(fmt.Errorf("invalid X-Registry-Auth header: %w", err))
	}
	return kc, nil
}
