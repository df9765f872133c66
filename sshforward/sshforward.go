// Package sshforward lends ssh agents to RUN --mount=type=ssh. Each mount
// gets a unix socket of its own, created by kiln and bound into the
// sandbox, that speaks the ssh agent protocol and nothing else: requests
// are decoded and answered by a read-only view of the agent the user named
// with --ssh, either an agent socket on the host or keys held in kiln's
// memory. The sandbox can list keys and have data signed; it cannot add,
// remove or lock keys, use extensions, or reach anything but that agent.
package sshforward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// DefaultID is the id of --ssh default and of a RUN --mount=type=ssh
// without id=.
const DefaultID = "default"

// maxKeySize bounds a key file: no private key is anywhere near as big,
// and a path to something else must not be read whole.
const maxKeySize = 100 << 10

// dialTimeout bounds the connection to a host agent: a socket nobody
// accepts on must not hold the step forever.
const dialTimeout = 5 * time.Second

// Agent is one --ssh ID: an agent socket on the host, or keys read from
// files when the flag was parsed. Neither the path nor the keys ever leave
// it.
type Agent struct {
	ID     string
	socket string      // the host agent's socket
	keys   agent.Agent // the keys of key files, else nil
}

// Agents are the --ssh agents of a build, by ID.
type Agents map[string]*Agent

// Parse reads --ssh flags in buildx's syntax: ID, ID=SOCKET or
// ID=KEY[,KEY…]. "default" without a path (and any ID given no path) is
// the agent at $SSH_AUTH_SOCK, read through getenv.
func Parse(specs []string, getenv func(string) string) (Agents, error) {
	out := Agents{}
	for _, spec := range specs {
		id, paths, hasPaths := strings.Cut(spec, "=")
		if id == "" {
			return nil, fmt.Errorf("--ssh %q: want ID, ID=SOCKET or ID=KEY[,KEY...] (e.g. --ssh default)", spec)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("--ssh %s is given twice; give each ID once", id)
		}
		var list []string
		if hasPaths && paths != "" {
			list = strings.Split(paths, ",")
		}
		a, err := newAgent(id, list, getenv)
		if err != nil {
			return nil, err
		}
		out[id] = a
	}
	return out, nil
}

// newAgent opens the source of one --ssh ID: one socket, or key files.
func newAgent(id string, paths []string, getenv func(string) string) (*Agent, error) {
	if len(paths) == 0 {
		sock := getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return nil, fmt.Errorf("--ssh %s: SSH_AUTH_SOCK is not set; start an agent and add your key (eval $(ssh-agent) && ssh-add), or name a key file: --ssh %s=$HOME/.ssh/id_ed25519", id, id)
		}
		paths = []string{sock}
	}
	a := &Agent{ID: id}
	var keyring agent.Agent
	for _, p := range paths {
		if p == "" {
			return nil, fmt.Errorf("--ssh %s: empty path in the list; separate key files with single commas", id)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("--ssh %s: %w (name an agent socket or a private key file)", id, err)
		}
		if fi.Mode()&os.ModeSocket != 0 {
			if len(paths) > 1 {
				return nil, fmt.Errorf("--ssh %s: an agent socket cannot be combined with other sockets or key files; give it alone, or give key files only", id)
			}
			a.socket = p
			return a, nil
		}
		key, err := readKey(p)
		if err != nil {
			return nil, fmt.Errorf("--ssh %s: %w", id, err)
		}
		if keyring == nil {
			keyring = agent.NewKeyring()
		}
		if err := keyring.Add(agent.AddedKey{PrivateKey: key}); err != nil {
			return nil, fmt.Errorf("--ssh %s: adding the key of %s: %w", id, p, err)
		}
	}
	a.keys = keyring
	return a, nil
}

// readKey parses the private key in file p.
func readKey(p string) (any, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is neither an agent socket nor a private key file", p)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeySize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeySize {
		return nil, fmt.Errorf("%s is too big for a private key (over %d KiB)", p, maxKeySize>>10)
	}
	key, err := ssh.ParseRawPrivateKey(data)
	var pass *ssh.PassphraseMissingError
	if errors.As(err, &pass) {
		return nil, fmt.Errorf("the key in %s is protected by a passphrase: add it to an agent (ssh-add %s) and pass the agent instead (--ssh ID=$SSH_AUTH_SOCK)", p, p)
	}
	if err != nil {
		// The parser's message, never the bytes.
		return nil, fmt.Errorf("reading the private key in %s: %w", p, err)
	}
	return key, nil
}

// Server answers the agent protocol on one socket until Close.
type Server struct {
	a    *Agent
	l    *net.UnixListener
	path string

	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen creates a unix socket at path (whose directory must be private
// to kiln: the socket is reachable there until its owner and mode are set)
// owned by uid:gid with permission bits mode, and serves the agent on it
// until Close.
func (a *Agent) Listen(path string, uid, gid int, mode os.FileMode) (*Server, error) {
	l, err := listenUnix(path)
	if err != nil {
		return nil, fmt.Errorf("creating the ssh agent socket: %w", err)
	}
	// The socket file goes with the directory the caller removes; Close
	// removes it by path, never through a path that may be stale.
	l.SetUnlinkOnClose(false)
	if err := os.Chown(path, uid, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("setting the owner of the ssh agent socket: %w", err)
	}
	if err := os.Chmod(path, mode.Perm()); err != nil {
		l.Close()
		return nil, fmt.Errorf("setting the mode of the ssh agent socket: %w", err)
	}
	s := &Server{a: a, l: l, path: path, conns: map[io.Closer]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return // closed
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serve(c)
		}()
	}
}

// serve answers one connection of the sandbox. Errors end the connection
// only: the client sees it closed, and kiln's log never names the agent.
func (s *Server) serve(c net.Conn) {
	var backend agent.Agent = s.a.keys
	if s.a.socket != "" {
		up, err := net.DialTimeout("unix", s.a.socket, dialTimeout)
		if err != nil {
			return
		}
		if !s.track(up) {
			up.Close()
			return
		}
		defer s.untrack(up)
		backend = agent.NewClient(up)
	}
	agent.ServeAgent(readOnly{backend}, c)
}

// track records a connection for Close; false once the server is closed.
func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops listening, ends every connection (a process the step left
// behind holds none past it) and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	err := s.l.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

// errReadOnly answers the requests that would change the agent.
var errReadOnly = errors.New("kiln forwards the ssh agent read-only: keys cannot be added, removed or locked from a build")

// readOnly lets the sandbox list keys and sign with them, nothing more.
type readOnly struct{ a agent.Agent }

func (r readOnly) List() ([]*agent.Key, error) { return r.a.List() }

func (r readOnly) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return r.a.Sign(key, data)
}

func (r readOnly) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	if ea, ok := r.a.(agent.ExtendedAgent); ok {
		return ea.SignWithFlags(key, data, flags)
	}
	if flags != 0 {
		return nil, fmt.Errorf("signature flags %d are not supported", flags)
	}
	return r.a.Sign(key, data)
}

func (r readOnly) Signers() ([]ssh.Signer, error) { return nil, errReadOnly }
func (r readOnly) Add(agent.AddedKey) error       { return errReadOnly }
func (r readOnly) Remove(ssh.PublicKey) error     { return errReadOnly }
func (r readOnly) RemoveAll() error               { return errReadOnly }
func (r readOnly) Lock([]byte) error              { return errReadOnly }
func (r readOnly) Unlock([]byte) error            { return errReadOnly }
func (r readOnly) Extension(string, []byte) ([]byte, error) {
	// session-bind@openssh.com and the like: clients go on without.
	return nil, agent.ErrExtensionUnsupported
}
