package planner

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/sshforward"
)

// sshMount is a RUN --mount=type=ssh: the socket prepare creates for the
// agent and binds at mounts[index].
type sshMount struct {
	index    int // in runMounts.mounts
	agent    *sshforward.Agent
	uid, gid int
	mode     os.FileMode
}

// resolveSSH adds a RUN --mount=type=ssh to rm and its identity to the
// step key, as BuildKit keys it: id, target, required, owner and mode,
// never what --ssh points at (a socket path that changes with every
// login, or a key). The first ssh mount sets SSH_AUTH_SOCK unless the
// stage's environment has one. An id the build has no --ssh for fails the
// step when it runs if required, as BuildKit's does (a cache hit needs no
// agent); else the step runs without the socket.
func (b *build) resolveSSH(s *stage, m *instructions.Mount, name string, rm *runMounts, k *stepKey) error {
	if m.Source != "" {
		return errors.New("RUN --mount=type=ssh takes no source: remove source= (id= picks the --ssh agent)")
	}
	if m.From != "" {
		return errors.New("RUN --mount=type=ssh takes no from: remove from= (id= picks the --ssh agent)")
	}
	id := m.CacheID
	if id == "" {
		id = sshforward.DefaultID
	}
	target := m.Target
	if target == "" {
		target = fmt.Sprintf("/run/buildkit/ssh_agent.%d", rm.nSSH)
	} else {
		// BuildKit does not join an ssh target with the working
		// directory: a relative one is below /.
		target = path.Join("/", target)
	}
	if rm.nSSH == 0 {
		if _, ok := s.env.Get("SSH_AUTH_SOCK"); !ok {
			rm.env = append(rm.env, "SSH_AUTH_SOCK="+target)
		}
	}
	rm.nSSH++
	sm := sshMount{mode: 0o600}
	if m.Mode != nil {
		sm.mode = os.FileMode(*m.Mode) & os.ModePerm
	}
	if m.UID != nil {
		sm.uid = int(*m.UID)
	}
	if m.GID != nil {
		sm.gid = int(*m.GID)
	}
	k.add(name, fmt.Sprintf("ssh id=%s target=%s required=%v mode=%o uid=%d gid=%d", id, target, m.Required, sm.mode, sm.uid, sm.gid))
	a := b.opt.SSH[id]
	if a == nil {
		if m.Required {
			rm.sshErr = fmt.Errorf("RUN --mount=type=ssh,id=%s is required, but the build has no ssh agent %q: pass one with --ssh %s (the agent at $SSH_AUTH_SOCK) or --ssh %s=KEYFILE", id, id, id, id)
		}
		return nil
	}
	sm.agent = a
	sm.index = len(rm.mounts)
	rm.ssh = append(rm.ssh, sm)
	rm.mounts = append(rm.mounts, executor.Mount{Type: "bind", Target: target})
	return nil
}

// startSSH serves the agent of each ssh mount on a socket of its own in
// the step directory, in a directory only kiln can reach, and points the
// mount at it. The returned stop (also on error) closes the sockets, and
// every connection on them, once the step is over.
func (rm *runMounts) startSSH(stepDir string) (stop func(), err error) {
	var servers []*sshforward.Server
	var dirs []string
	stop = func() {
		for _, s := range servers {
			s.Close()
		}
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	if rm.sshErr != nil {
		return stop, rm.sshErr
	}
	for n, sm := range rm.ssh {
		dir := filepath.Join(stepDir, fmt.Sprintf("ssh-%d", n))
		if err := os.Mkdir(dir, 0o700); err != nil {
			return stop, fmt.Errorf("creating the ssh agent socket: %w", err)
		}
		dirs = append(dirs, dir)
		sock := filepath.Join(dir, "agent.sock")
		srv, err := sm.agent.Listen(sock, sm.uid, sm.gid, sm.mode)
		if err != nil {
			return stop, fmt.Errorf("RUN --mount=type=ssh,id=%s: %w", sm.agent.ID, err)
		}
		servers = append(servers, srv)
		rm.mounts[sm.index].Source = sock
	}
	return stop, nil
}
