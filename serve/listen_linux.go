package serve

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// SocketGroup owns kiln serve's unix sockets when it exists and kiln runs
// as root: its members may use the API (and so build as root), as the
// docker group's do dockerd's.
const SocketGroup = "kiln"

// listenUnix creates the socket at path: mode 0660 and the given group
// when it is set and exists, else 0600 (its owner only). A socket file left by a
// server that is gone is replaced; one a server still answers on is not.
func listenUnix(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the directory of %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listening on %s: it exists and is not a socket: remove it or choose another --host", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listening on %s: a server already answers there: stop it or choose another --host", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
		}
	}
	mode, gid := os.FileMode(0o600), -1
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			if id, err := strconv.Atoi(g.Gid); err == nil {
				mode, gid = 0o660, id
			}
		}
	}
	// The socket must never be wider open than mode, not even between
	// bind and chmod: bind it under a umask that leaves only the owner.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("giving %s to group %s: %w", path, group, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("setting the mode of %s: %w", path, err)
	}
	return l, nil
}

// Activated returns the listeners systemd passed (socket activation:
// LISTEN_PID is this process, LISTEN_FDS of them from fd 3), or nil when
// there are none. It unsets the variables so that child processes (RUN
// steps) do not take the sockets for theirs.
func Activated() ([]Listener, error) {
	pid, nfds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || nfds == "" {
		return nil, nil
	}
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a number of sockets: fix the socket unit", nfds)
	}
	var out []Listener
	for fd := 3; fd < 3+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		l, err := net.FileListener(f)
		f.Close() // FileListener holds its own copy
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("socket activation: fd %d: %w: the socket unit must pass stream sockets (ListenStream=)", fd, err)
		}
		addr := l.Addr().Network() + "://" + l.Addr().String()
		if ul, ok := l.(*net.UnixListener); ok {
			// systemd made the socket file and removes it, not kiln
			ul.SetUnlinkOnClose(false)
			addr = "unix://" + ul.Addr().String()
		}
		out = append(out, Listener{l, addr})
	}
	return out, nil
}
