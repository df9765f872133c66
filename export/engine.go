package export

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultDockerSocket is where a Docker engine listens when DOCKER_HOST
// is unset.
const DefaultDockerSocket = "/var/run/docker.sock"

// Engine is a Docker engine that --load hands images to, through its API.
type Engine struct {
	// Host is the engine's address as DOCKER_HOST spells it.
	Host   string
	client *http.Client
	base   string // URL prefix of API calls
}

// DockerEngine returns the engine that DOCKER_HOST names, else the one on
// DefaultDockerSocket, once it answers /_ping. The error says what to do.
func DockerEngine(ctx context.Context) (*Engine, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = "unix://" + DefaultDockerSocket
	}
	e, err := newEngine(host)
	if err != nil {
		return nil, err
	}
	if err := e.ping(ctx); err != nil {
		if os.Getenv("DOCKER_HOST") == "" {
			return nil, fmt.Errorf("no Docker engine answers on %s (%w): start one, or set DOCKER_HOST to its address", DefaultDockerSocket, err)
		}
		return nil, fmt.Errorf("the Docker engine at DOCKER_HOST=%s does not answer (%w): check that it runs, or fix DOCKER_HOST", host, err)
	}
	return e, nil
}

func newEngine(host string) (*Engine, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("DOCKER_HOST=%s: %w", host, err)
	}
	tr := &http.Transport{ResponseHeaderTimeout: 0}
	e := &Engine{Host: host, client: &http.Client{Transport: tr}}
	switch u.Scheme {
	case "unix":
		sock := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		e.base = "http://docker"
	case "tcp":
		if os.Getenv("DOCKER_TLS_VERIFY") != "" {
			return nil, fmt.Errorf("DOCKER_HOST=%s with DOCKER_TLS_VERIFY: kiln --load does not speak TLS to an engine yet; use its unix socket, or write a docker archive with -o type=docker,dest=FILE and docker load it", host)
		}
		e.base = "http://" + u.Host
	default:
		return nil, fmt.Errorf("DOCKER_HOST=%s: kiln --load reaches an engine over unix:// or tcp:// only; write a docker archive with -o type=docker,dest=FILE and docker load it", host)
	}
	return e, nil
}

func (e *Engine) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/_ping answered %s", resp.Status)
	}
	return nil
}

// Load streams img as a docker archive tagged with names into the
// engine (POST /images/load), as `docker load` does.
func (e *Engine) Load(ctx context.Context, img v1.Image, names []string) error {
	pr, pw := io.Pipe()
	// Closed on every return: the writer stops if the engine quits early.
	defer pr.Close()
	go func() {
		out := Output{Type: "docker", Dest: StdoutDest, Stdout: pw, Attrs: map[string]string{}}
		pw.CloseWithError(Write(ctx, img, out, names))
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/images/load?quiet=1", pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("loading into the Docker engine at %s: %w", e.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("loading into the Docker engine at %s: %s: %s", e.Host, resp.Status, engineMessage(msg))
	}
	// A JSON message stream; an error arrives as a message, with 200.
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && (m.Error != "" || m.ErrorDetail.Message != "") {
			if m.ErrorDetail.Message != "" {
				m.Error = m.ErrorDetail.Message
			}
			return fmt.Errorf("loading into the Docker engine at %s: %s", e.Host, m.Error)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("loading into the Docker engine at %s: reading its answer: %w", e.Host, err)
	}
	return nil
}

// engineMessage is the message of an API error body ({"message": …}),
// else the body itself.
func engineMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		return m.Message
	}
	return strings.TrimSpace(string(body))
}
