package planner

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// parsePorts turns EXPOSE arguments ("80", "443/tcp", "53/UDP",
// "8000-8002", "[ip:]host:container/proto") into "port/proto" keys with
// BuildKit's rules: tcp by default, protocols lower-cased, ranges expanded.
func parsePorts(specs []string) ([]string, error) {
	var out []string
	for _, raw := range specs {
		ip, hostPort, containerPort := splitPortParts(raw)
		port, proto, _ := strings.Cut(containerPort, "/")
		if port == "" {
			return nil, fmt.Errorf("invalid port: %q: no port specified", raw)
		}
		if proto == "" {
			proto = "tcp"
		}
		if ip != "" {
			if ip[0] == '[' {
				h, _, err := net.SplitHostPort(ip + ":")
				if err != nil {
					return nil, fmt.Errorf("invalid IP address %v", ip)
				}
				ip = h
			}
			if net.ParseIP(ip) == nil {
				return nil, errors.New("invalid IP address: " + ip)
			}
		}
		start, end, err := portRange(port)
		if err != nil {
			return nil, errors.New("invalid containerPort: " + port)
		}
		if hostPort != "" {
			hs, he, err := portRange(hostPort)
			if err != nil {
				return nil, errors.New("invalid hostPort: " + hostPort)
			}
			if end-start != he-hs && end != start {
				return nil, fmt.Errorf("invalid ranges specified for container and host Ports: %s and %s", containerPort, hostPort)
			}
		}
		for p := start; p <= end; p++ {
			out = append(out, strconv.Itoa(p)+"/"+strings.ToLower(proto))
		}
	}
	return out, nil
}

// splitPortParts splits "[ip:]public:private" the way Docker does.
func splitPortParts(raw string) (ip, host, container string) {
	parts := strings.Split(raw, ":")
	n := len(parts)
	switch {
	case n == 1:
		return "", "", parts[0]
	case n == 2:
		return "", parts[0], parts[1]
	default:
		return strings.Join(parts[:n-2], ":"), parts[n-2], parts[n-1]
	}
}

func portRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	start, err := portNumber(a)
	if err != nil {
		return 0, 0, err
	}
	if !ok || a == b {
		return start, start, nil
	}
	end, err := portNumber(b)
	if err != nil || end < start {
		return 0, 0, errors.New("invalid port range: " + s)
	}
	return start, end, nil
}

func portNumber(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return p, nil
}

// checkSignal accepts what Docker accepts for STOPSIGNAL: a number, or a
// signal name with or without the SIG prefix (SIGRTMIN+n included).
func checkSignal(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return fmt.Errorf("invalid signal: %s", s)
		}
		return nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if strings.HasPrefix(name, "SIGRTMIN+") || strings.HasPrefix(name, "SIGRTMAX-") {
		return nil
	}
	if unix.SignalNum(name) == 0 {
		return fmt.Errorf("invalid signal: %s", s)
	}
	return nil
}
