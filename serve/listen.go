package serve

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// DefaultHost is where kiln serve listens unless told otherwise.
const DefaultHost = "unix:///run/kiln/kiln.sock"

// TLSFiles are the --tlscacert, --tlscert and --tlskey files.
type TLSFiles struct {
	CACert, Cert, Key string
}

// Listener is one address the server listens on.
type Listener struct {
	net.Listener
	// Address is how clients reach it: unix:///path or tcp://host:port.
	Address string
}

// Endpoint is a parsed --host.
type Endpoint struct {
	Network string // "unix" or "tcp"
	Address string // the socket path, or host:port
}

// ParseHost reads a --host value: unix:///path or tcp://host[:port], the
// port defaulting to 2375, or 2376 with TLS, as dockerd has them.
func ParseHost(h string, withTLS bool) (Endpoint, error) {
	scheme, rest, ok := strings.Cut(h, "://")
	if !ok {
		return Endpoint{}, fmt.Errorf("--host %s: give unix:///PATH or tcp://HOST:PORT", h)
	}
	switch scheme {
	case "unix":
		if !strings.HasPrefix(rest, "/") {
			return Endpoint{}, fmt.Errorf("--host %s: the socket path must be absolute (unix:///run/kiln/kiln.sock)", h)
		}
		return Endpoint{"unix", rest}, nil
	case "tcp":
		u, err := url.Parse(h)
		if err != nil || u.Path != "" && u.Path != "/" || u.User != nil || u.RawQuery != "" {
			return Endpoint{}, fmt.Errorf("--host %s: give tcp://HOST:PORT, with no path", h)
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = "2375"
			if withTLS {
				port = "2376"
			}
		}
		return Endpoint{"tcp", net.JoinHostPort(host, port)}, nil
	}
	return Endpoint{}, fmt.Errorf("--host %s: kiln serves on unix:// and tcp:// addresses only", h)
}

// loopback tells whether a tcp host:port only accepts connections from
// this machine. An empty host means every interface.
func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// TLSConfig is the server's TLS configuration from f, nil when f names no
// certificate. With a CA, clients must present a certificate it signed.
func (f TLSFiles) TLSConfig() (*tls.Config, error) {
	if f.Cert == "" && f.Key == "" && f.CACert == "" {
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("--tlscert and --tlskey go together, and --tlscacert needs both: give the server's certificate and key")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("loading --tlscert %s and --tlskey %s: %w", f.Cert, f.Key, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.CACert != "" {
		pem, err := os.ReadFile(f.CACert)
		if err != nil {
			return nil, fmt.Errorf("reading --tlscacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading --tlscacert %s: no PEM certificate in it", f.CACert)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Listen opens the listeners for hosts. A tcp address that is not
// loopback is refused unless cfg requires client certificates: anyone
// who reaches the API can build, and builds run as root. Unix sockets are
// given to group when it is set and exists (mode 0660), else kept to
// their owner (0600).
func Listen(hosts []string, cfg *tls.Config, group string) ([]Listener, error) {
	var out []Listener
	fail := func(err error) ([]Listener, error) {
		for _, l := range out {
			l.Close()
		}
		return nil, err
	}
	for _, h := range hosts {
		ep, err := ParseHost(h, cfg != nil)
		if err != nil {
			return fail(err)
		}
		switch ep.Network {
		case "unix":
			l, err := listenUnix(ep.Address, group)
			if err != nil {
				return fail(err)
			}
			out = append(out, Listener{l, "unix://" + ep.Address})
		case "tcp":
			if !loopback(ep.Address) && (cfg == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert) {
				return fail(fmt.Errorf("--host %s is reachable from other machines: give --tlscacert, --tlscert and --tlskey so that only clients with a certificate signed by that CA get in (as dockerd's --tlsverify), or listen on 127.0.0.1", h))
			}
			l, err := net.Listen("tcp", ep.Address)
			if err != nil {
				return fail(fmt.Errorf("listening on %s: %w", h, err))
			}
			addr := "tcp://" + l.Addr().String()
			if cfg != nil {
				l = tls.NewListener(l, cfg)
			}
			out = append(out, Listener{l, addr})
		}
	}
	return out, nil
}
