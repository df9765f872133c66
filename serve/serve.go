// Package serve is kiln's Docker Engine API server: the HTTP layer that
// lets the docker CLI, docker-py, docker-compose and other Engine API
// clients talk to kiln over a socket. It decodes requests and encodes
// answers as dockerd does; what is served comes from a Backend, so no
// build or store logic lives in the handlers.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kiln-build/kiln/source"
)

// The API versions kiln answers. 1.41 is what dockerd 20.10 (Debian's
// docker.io) speaks, so its CLI and docker-py use it unchanged; newer
// clients negotiate down to it through /_ping. 1.24 is the oldest
// version today's dockerd still accepts.
const (
	MaxAPIVersion = "1.41"
	MinAPIVersion = "1.24"
)

// Server routes Engine API requests to its handlers. Build it with New.
type Server struct {
	backend Backend
	routes  []route

	builder   Builder      // POST /build: SetBuilder
	buildOpts BuildOptions // of POST /build
	images    imageState   // image endpoints: SetImages
	// concurrent builds: buildturn.go
	buildSlots      chan struct{}
	removals        chan struct{} // scratch removals under way: scratch.go
	files           *source.FilePool
	builds          inFlight
	cancelled       atomic.Bool // Run cancelled the requests in flight
	shutdownTimeout time.Duration
}

// handlerFunc serves one route; vars holds the route's {name} segments.
// An error it returns becomes dockerd's JSON error answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request, vars map[string]string) error

type route struct {
	method  string
	pattern *regexp.Regexp
	names   []string
	h       handlerFunc
}

// New returns the server answering from b.
func New(b Backend) *Server {
	s := &Server{backend: b, shutdownTimeout: DefaultShutdownTimeout}
	s.handle("GET", "/_ping", s.ping)
	s.handle("HEAD", "/_ping", s.ping)
	s.handle("GET", "/version", s.version)
	s.handle("GET", "/info", s.info)
	s.imageRoutes()
	s.networkRoutes()
	s.registryRoutes()
	return s
}

// handle adds a route. In path, {name} matches one path segment and
// {name:*} the rest of the path, slashes included (image names have them).
func (s *Server) handle(method, path string, h handlerFunc) {
	var re strings.Builder
	var names []string
	re.WriteString("^")
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		re.WriteString("/")
		switch {
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, ":*}"):
			names = append(names, seg[1:len(seg)-3])
			re.WriteString("(.+)")
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}"):
			names = append(names, seg[1:len(seg)-1])
			re.WriteString("([^/]+)")
		default:
			re.WriteString(regexp.QuoteMeta(seg))
		}
	}
	re.WriteString("$")
	s.routes = append(s.routes, route{method: method, pattern: regexp.MustCompile(re.String()), names: names, h: h})
}

// versionPrefix is dockerd's /v{version:[0-9.]+} path prefix.
var versionPrefix = regexp.MustCompile(`^/v([0-9.]+)(/.*)$`)

type ctxKey struct{}

// APIVersion is the API version a request was made with: the one in its
// path, or MaxAPIVersion for an unversioned path.
func APIVersion(ctx context.Context) string {
	if v, ok := ctx.Value(ctxKey{}).(string); ok {
		return v
	}
	return MaxAPIVersion
}

// ServeHTTP negotiates the API version, then routes the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// dockerd sets these on every answer; clients read API-Version off
	// any response, not only /_ping.
	h.Set("Server", "kiln/"+s.backend.Version().Version+" (linux)")
	h.Set("API-Version", MaxAPIVersion)
	h.Set("OSType", "linux")

	path, version := r.URL.Path, MaxAPIVersion
	if m := versionPrefix.FindStringSubmatch(path); m != nil {
		version, path = m[1], m[2]
		if compareVersions(version, MaxAPIVersion) > 0 {
			writeError(w, badRequest(fmt.Errorf("client version %s is too new. Maximum supported API version is %s", version, MaxAPIVersion)))
			return
		}
		if compareVersions(version, MinAPIVersion) < 0 {
			writeError(w, badRequest(fmt.Errorf("client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version", version, MinAPIVersion)))
			return
		}
	}
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, version))

	pathMatched := false
	for _, rt := range s.routes {
		m := rt.pattern.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		pathMatched = true
		if rt.method != r.Method {
			continue
		}
		vars := make(map[string]string, len(rt.names))
		for i, n := range rt.names {
			vars[n] = m[i+1]
		}
		if err := rt.h(w, r, vars); err != nil {
			writeError(w, err)
		}
		return
	}
	if pathMatched || dockerPath(path) {
		writeError(w, &statusError{http.StatusNotImplemented,
			fmt.Errorf("kiln serves builds and images only: %s %s is not implemented", r.Method, path)})
		return
	}
	writeError(w, &statusError{http.StatusNotFound, errors.New("page not found")})
}

// dockerAreas are the first path segments of the Engine API: a path under
// one of them that kiln has no route for is an endpoint kiln does not
// implement (501), not an unknown page (404).
var dockerAreas = map[string]bool{
	"auth": true, "build": true, "commit": true, "configs": true, "containers": true,
	"distribution": true, "events": true, "exec": true, "grpc": true, "images": true,
	"networks": true, "nodes": true, "plugins": true, "secrets": true, "services": true,
	"session": true, "swarm": true, "system": true, "tasks": true, "volumes": true,
}

func dockerPath(path string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return dockerAreas[first]
}

// compareVersions compares dotted API versions numerically: -1, 0 or 1.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return 0
}

// statusError is an error with the HTTP status it answers with.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func badRequest(err error) error { return &statusError{http.StatusBadRequest, err} }

// writeError answers as dockerd does: {"message": "..."} with the error's
// status, 500 when it has none.
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var se *statusError
	if errors.As(err, &se) {
		code = se.code
	}
	writeJSON(w, code, struct {
		Message string `json:"message"`
	}{err.Error()})
}

// writeJSON answers with v. An encoding error can only be the client
// going away: there is no one left to tell.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
