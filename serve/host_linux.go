package serve

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// host is what GET /version and /info say about the machine.
type host struct {
	id, hostname, kernel, machine string
	osName, osVersion             string
	cgroupVersion                 string
	memTotal                      int64
}

func kernelVersion() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func hostFacts() host {
	var h host
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.kernel = unix.ByteSliceToString(u.Release[:])
		h.machine = unix.ByteSliceToString(u.Machine[:])
	}
	h.hostname, _ = os.Hostname()
	h.osName, h.osVersion = osRelease()
	h.cgroupVersion = "1"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		h.cgroupVersion = "2"
	}
	h.memTotal = memTotal()
	// dockerd's ID is a random one kept in its root; kiln writes nothing
	// for it, and derives a stable one from the machine instead.
	mid, _ := os.ReadFile("/etc/machine-id")
	sum := sha256.Sum256(append(bytes.TrimSpace(mid), h.hostname...))
	h.id = fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	return h
}

// osRelease reads PRETTY_NAME and VERSION_ID from os-release, as dockerd
// reports them.
func osRelease() (name, version string) {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		if f, err = os.Open("/usr/lib/os-release"); err != nil {
			return "Linux", ""
		}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		switch k {
		case "PRETTY_NAME":
			name = v
		case "VERSION_ID":
			version = v
		}
	}
	if name == "" {
		name = "Linux"
	}
	return name, version
}

// memTotal is MemTotal from /proc/meminfo, in bytes.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
