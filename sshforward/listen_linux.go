package sshforward

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxSocketPath is what fits in sockaddr_un's sun_path with its NUL.
const maxSocketPath = 107

// listenUnix listens on a new unix socket at path. A store path can be
// longer than a socket address holds: the socket is then bound through
// /proc/self/fd of its directory, which names the same place in a few
// bytes.
func listenUnix(path string) (*net.UnixListener, error) {
	addr := path
	if len(path) > maxSocketPath {
		dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		// Only bind resolves the address; the directory can go after.
		defer dir.Close()
		addr = fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	}
	return net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
}
