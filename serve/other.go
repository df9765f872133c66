//go:build !linux

package serve

import (
	"errors"
	"net"
)

// kiln serve builds with Linux sandboxes; elsewhere it reports what Go
// knows and cannot listen on unix sockets with kiln's permissions.

func kernelVersion() string { return "" }

func hostFacts() host { return host{osName: "unknown", cgroupVersion: ""} }

type host struct {
	id, hostname, kernel, machine string
	osName, osVersion             string
	cgroupVersion                 string
	memTotal                      int64
}

func listenUnix(path, group string) (net.Listener, error) {
	return nil, errors.New("kiln serve needs Linux: run it on a Linux host")
}

// Activated: socket activation is systemd's, on Linux.
func Activated() ([]Listener, error) { return nil, nil }

// SocketGroup owns kiln serve's unix sockets on Linux.
const SocketGroup = "kiln"
