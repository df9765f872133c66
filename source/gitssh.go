package source

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moby/buildkit/util/gitutil"

	"github.com/kiln-build/kiln/sshforward"
)

// GitOption changes how ResolveGit, Git and FetchContext run git.
type GitOption func(*gitOptions)

type gitOptions struct {
	agents   sshforward.Agents
	agentDir string
}

// WithSSHAgents gives git the build's --ssh agents for ssh remotes
// (ssh://… and git@host:…). As BuildKit's git source, such a remote uses
// the agent of --ssh default, served read-only on a socket kiln creates in
// a new private directory below dir for as long as git runs; a build with
// --ssh agents but no default one cannot fetch it. A build without any
// --ssh keeps kiln's own environment (SSH_AUTH_SOCK, ~/.ssh), as before.
func WithSSHAgents(agents sshforward.Agents, dir string) GitOption {
	return func(o *gitOptions) { o.agents, o.agentDir = agents, dir }
}

// UsesSSH reports whether git reaches g's remote over ssh.
func (g *GitRef) UsesSSH() bool {
	u, err := gitutil.ParseURL(g.Remote)
	return err == nil && u.Scheme == gitutil.SSHProtocol
}

// maxSocketPath is what a client can connect to: sun_path with its NUL.
// ssh connects by path, so the socket cannot be reached through a
// shortened /proc path as kiln binds it.
const maxSocketPath = 107

// gitSSHCommand is the ssh git runs with a --ssh agent. The agent is the
// one git's environment names, whatever the user's ssh config says
// (IdentityAgent), and nothing may prompt. Host keys: BuildKit accepts
// whatever key the server shows (a key scanned from the same server just
// before, else StrictHostKeyChecking=no), as a daemon has no known_hosts
// of its own to check. Kiln runs as the user, who may have one: a host
// listed there must show the key listed (a changed key fails, as it does
// for the user's own ssh), and a host not listed is accepted for this
// fetch without being written anywhere (/dev/null comes first, and ssh
// records new keys in the first file), as BuildKit does.
func gitSSHCommand() string {
	return "ssh -o BatchMode=yes -o IdentityAgent=SSH_AUTH_SOCK -o StrictHostKeyChecking=accept-new -o 'UserKnownHostsFile=/dev/null " + userKnownHosts + "' -o LogLevel=ERROR"
}

// userKnownHosts is the user's known_hosts as ssh expands it (from the
// passwd entry, not $HOME); tests point it elsewhere.
var userKnownHosts = "~/.ssh/known_hosts"

// gitSession is the environment git runs with for one remote, and what to
// stop when git is done.
type gitSession struct {
	env  []string
	stop func()
	// hint is added to a failure: how to give git an agent.
	hint string
}

// startGit prepares git's environment for g: for an ssh remote with a
// --ssh default agent, that agent served on a private socket.
func startGit(g *GitRef, opts []GitOption) (*gitSession, error) {
	var o gitOptions
	for _, f := range opts {
		f(&o)
	}
	s := &gitSession{env: GitEnv(), stop: func() {}}
	if !g.UsesSSH() {
		return s, nil
	}
	if len(o.agents) == 0 {
		s.hint = "to fetch it with an ssh agent, pass --ssh default (the agent at $SSH_AUTH_SOCK) or --ssh default=KEYFILE"
		return s, nil
	}
	a := o.agents[sshforward.DefaultID]
	if a == nil {
		return nil, fmt.Errorf("git source %s is fetched over ssh with the --ssh default agent, and this build has --ssh for other IDs only: add --ssh default (the agent at $SSH_AUTH_SOCK) or --ssh default=KEYFILE", Redact(g.Remote))
	}
	dir, err := privateDir(o.agentDir)
	if err != nil {
		return nil, fmt.Errorf("creating the ssh agent socket for git: %w", err)
	}
	sock := filepath.Join(dir, "agent.sock")
	srv, err := a.Listen(sock, os.Getuid(), os.Getgid(), 0o600)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("serving --ssh default to git: %w", err)
	}
	s.stop = func() {
		srv.Close()
		os.RemoveAll(dir)
	}
	s.env = append(s.env, "SSH_AUTH_SOCK="+sock, "GIT_SSH_COMMAND="+gitSSHCommand())
	return s, nil
}

// privateDir creates a directory only kiln's user can enter, below parent
// when a socket there has a path short enough to connect to, else below
// the system's temporary directory.
func privateDir(parent string) (string, error) {
	if parent != "" {
		dir, err := os.MkdirTemp(parent, "ssh-")
		if err != nil {
			return "", err
		}
		if len(filepath.Join(dir, "agent.sock")) <= maxSocketPath {
			return dir, nil
		}
		os.Remove(dir)
	}
	dir, err := os.MkdirTemp("", "kiln-ssh-")
	if err != nil {
		return "", err
	}
	if len(filepath.Join(dir, "agent.sock")) > maxSocketPath {
		os.Remove(dir)
		return "", errors.New("the temporary directory's path is too long for a unix socket: set TMPDIR to a shorter one")
	}
	return dir, nil
}

// wrap adds s's hint to a git failure.
func (s *gitSession) wrap(err error) error {
	if err == nil || s.hint == "" {
		return err
	}
	return fmt.Errorf("%w; %s", err, s.hint)
}
