package executor

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// HostIP is one extra /etc/hosts entry of RUN steps (--add-host).
type HostIP struct {
	Host string
	IP   netip.Addr
}

// Ulimit is one resource limit of RUN commands (--ulimit): Name as docker
// spells it ("nofile", "nproc" ...); -1 is unlimited.
type Ulimit struct {
	Name       string
	Soft, Hard int64
}

// DefaultShmSize is the size of a RUN step's /dev/shm when Sandbox.ShmSize
// is 0: 64 MiB, as BuildKit and docker.
const DefaultShmSize = 64 << 20

// HostGateway is the special --add-host address docker maps to the
// host's address on the container's network.
const HostGateway = "host-gateway"

// ParseHostIP reads an --add-host value, HOST:IP or HOST=IP as docker
// accepts them (an IPv6 address may be written in brackets).
func ParseHostIP(s string) (HostIP, error) {
	host, ip, ok := strings.Cut(s, "=")
	if !ok {
		// HOST:IP; an IPv6 address contains colons, the host does not.
		host, ip, ok = strings.Cut(s, ":")
	}
	if !ok || host == "" || ip == "" {
		return HostIP{}, fmt.Errorf("want HOST:IP, e.g. db:10.0.0.5")
	}
	if strings.ContainsAny(host, " \t\n\r#") {
		return HostIP{}, fmt.Errorf("host name %q contains white space or #", host)
	}
	if ip == HostGateway {
		// Docker maps it to its bridge's address on the host. A kiln RUN
		// step has no route to the host on the default network (its
		// user-mode networking keeps the host's services out), so there
		// is nothing honest to map it to.
		return HostIP{}, fmt.Errorf("%s: kiln's RUN network has no gateway to the host; give the host's address instead, and reach it with --network=host --allow %s", HostGateway, EntitlementNetworkHost)
	}
	addr, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(ip, "["), "]"))
	if err != nil || addr.Zone() != "" {
		return HostIP{}, fmt.Errorf("%q is not an IP address", ip)
	}
	return HostIP{Host: host, IP: addr.Unmap()}, nil
}

// String is the entry as --add-host takes it back.
func (h HostIP) String() string { return h.Host + ":" + h.IP.String() }

// ulimitNames are the resources --ulimit names, as docker spells them
// (go-units): no "as", which docker leaves out as unusable.
var ulimitNames = []string{"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue",
	"nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"}

// ParseUlimit reads an --ulimit value, NAME=SOFT[:HARD] as docker: the hard
// limit defaults to the soft one, -1 is unlimited.
func ParseUlimit(s string) (Ulimit, error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok {
		return Ulimit{}, fmt.Errorf("want NAME=SOFT[:HARD], e.g. nofile=1024:2048")
	}
	if !slices.Contains(ulimitNames, name) {
		return Ulimit{}, fmt.Errorf("unknown limit %q (known: %s)", name, strings.Join(ulimitNames, ", "))
	}
	softS, hardS, hasHard := strings.Cut(val, ":")
	soft, err := strconv.ParseInt(softS, 10, 64)
	if err != nil || soft < -1 {
		return Ulimit{}, fmt.Errorf("soft limit %q: want a number, or -1 for unlimited", softS)
	}
	hard := soft
	if hasHard {
		if hard, err = strconv.ParseInt(hardS, 10, 64); err != nil || hard < -1 {
			return Ulimit{}, fmt.Errorf("hard limit %q: want a number, or -1 for unlimited", hardS)
		}
	}
	if hard != -1 && (soft == -1 || soft > hard) {
		return Ulimit{}, fmt.Errorf("soft limit %s is above the hard limit %s", softS, hardS)
	}
	return Ulimit{Name: name, Soft: soft, Hard: hard}, nil
}

// String is the limit as --ulimit takes it back.
func (u Ulimit) String() string { return fmt.Sprintf("%s=%d:%d", u.Name, u.Soft, u.Hard) }

// hostsLines are the extra /etc/hosts lines, "IP\tHOST" as BuildKit
// appends them after its own.
func hostsLines(hosts []HostIP) string {
	var sb strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&sb, "%s\t%s\n", h.IP, h.Host)
	}
	return sb.String()
}

// checkRunFlags refuses sizes out of range.
func (s Sandbox) checkRunFlags() error {
	if s.ShmSize < 0 {
		return fmt.Errorf("/dev/shm size %d must not be negative", s.ShmSize)
	}
	return nil
}

// RunFlagsKey is the part of a RUN step's identity that the sandbox's
// extra hosts, /dev/shm size and limits make: BuildKit keeps them in the
// exec op, so they change its cache key. "" when none is set, so that the
// keys of builds without them stay the same.
func (s Sandbox) RunFlagsKey() string {
	var sb strings.Builder
	for _, h := range s.ExtraHosts {
		fmt.Fprintf(&sb, "host %d:%s;", len(h.String()), h.String())
	}
	if s.ShmSize != 0 {
		fmt.Fprintf(&sb, "shm %d;", s.ShmSize)
	}
	for _, u := range s.Ulimits {
		fmt.Fprintf(&sb, "ulimit %d:%s;", len(u.String()), u.String())
	}
	return sb.String()
}
