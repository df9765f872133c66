//go:build !linux

package sshforward

import "net"

// listenUnix listens on a new unix socket at path.
func listenUnix(path string) (*net.UnixListener, error) {
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}
