package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// DefaultConfigPath is read when $KILN_CONFIG is unset; a missing file
// there is no error.
const DefaultConfigPath = "/etc/kiln/kiln.toml"

// Config is the registry part of kiln.toml. It has the shape of
// buildkitd.toml's [registry."HOST"] tables so that users can carry their
// settings over unchanged.
type Config struct {
	// Registry maps a registry host (HOST or HOST:PORT; "docker.io" for
	// Docker Hub) to its settings.
	Registry map[string]HostConfig `toml:"registry"`
	// Limits bound the size of what registries send ([limits]).
	Limits Limits `toml:"limits"`
}

// HostConfig configures one registry host, as in buildkitd.toml.
type HostConfig struct {
	// Mirrors are tried in order before the host itself when pulling:
	// HOST[:PORT], optionally followed by a path under which the mirror
	// serves the host's repositories ("harbor.example.com/proxy.docker.io").
	Mirrors []string `toml:"mirrors"`
	// HTTP allows plain HTTP to the host.
	HTTP bool `toml:"http"`
	// Insecure skips TLS verification for the host (and allows plain HTTP,
	// as Docker's --insecure-registry does).
	Insecure bool `toml:"insecure"`
	// CA lists PEM files of extra certificate authorities for the host.
	CA []string `toml:"ca"`
	// KeyPairs are client certificates presented to the host.
	KeyPairs []KeyPair `toml:"keypair"`
}

// KeyPair is a client certificate and its key, both PEM files.
type KeyPair struct {
	Key  string `toml:"key"`
	Cert string `toml:"cert"`
}

// ConfigPath returns $KILN_CONFIG, else DefaultConfigPath.
func ConfigPath() string {
	if p := os.Getenv("KILN_CONFIG"); p != "" {
		return p
	}
	return DefaultConfigPath
}

// LoadConfig reads the registry settings of the kiln config file at path.
// A missing file is an error only when it was asked for explicitly, that is
// when path is not DefaultConfigPath. Tables other than [registry] and
// [limits] belong to other parts of kiln and are ignored here.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && path == DefaultConfigPath {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading kiln config: %w", err)
	}
	if err := toml.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("parsing kiln config %s: %w", path, err)
	}
	if err := c.Limits.check(); err != nil {
		return c, fmt.Errorf("parsing kiln config %s: [limits] %w", path, err)
	}
	hosts := make(map[string]HostConfig, len(c.Registry))
	for h, hc := range c.Registry {
		k := hostKey(h)
		if _, dup := hosts[k]; dup {
			return c, fmt.Errorf("parsing kiln config %s: registry %q is configured twice (under another spelling of %s)", path, h, k)
		}
		for _, m := range hc.Mirrors {
			if err := checkMirror(m); err != nil {
				return c, fmt.Errorf("parsing kiln config %s: registry %q: %w", path, h, err)
			}
		}
		hosts[k] = hc
	}
	c.Registry = hosts
	return c, nil
}

// hostKey is the spelling of a registry host used as a key in settings:
// Docker Hub has several names (go-containerregistry says
// index.docker.io, users say docker.io).
func hostKey(host string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "/"))
	host = strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	switch host {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		return "docker.io"
	}
	return host
}

// checkMirror refuses mirror entries that are URLs or have empty parts, so
// a typo fails when the config is read rather than on the first pull.
func checkMirror(m string) error {
	if strings.Contains(m, "://") {
		return fmt.Errorf("mirror %q: give HOST[:PORT][/PATH] without a scheme (use http = true under the mirror's own [registry.\"HOST\"] for plain HTTP)", m)
	}
	host, _, _ := strings.Cut(m, "/")
	if host == "" || strings.HasSuffix(m, "/") {
		return fmt.Errorf("mirror %q: want HOST[:PORT][/PATH]", m)
	}
	return nil
}

// ParseMirrorFlag parses --registry-mirror [REGISTRY=]MIRROR; REGISTRY
// defaults to docker.io, as with Docker's daemon flag. A mirror written as
// http://HOST asks for plain HTTP to it.
func ParseMirrorFlag(s string) (host, mirror string, plainHTTP bool, err error) {
	host, mirror, ok := strings.Cut(s, "=")
	if !ok {
		host, mirror = "docker.io", s
	}
	if host == "" {
		return "", "", false, fmt.Errorf("mirror %q: want REGISTRY=HOST[:PORT][/PATH]", s)
	}
	if rest, ok := strings.CutPrefix(mirror, "http://"); ok {
		mirror, plainHTTP = rest, true
	}
	mirror = strings.TrimPrefix(mirror, "https://")
	if err := checkMirror(mirror); err != nil {
		return "", "", false, err
	}
	return hostKey(host), mirror, plainHTTP, nil
}
