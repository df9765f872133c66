package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// dockerHubAuthKey is the key Docker keeps Docker Hub's credentials under,
// a historical URL rather than a host name.
const dockerHubAuthKey = authn.DefaultAuthKey

// ServerAddress is the key under which Docker's config stores the
// credentials of registry: a host[:port] (scheme and path dropped, as
// docker login does), or Docker Hub's historical URL.
func ServerAddress(registry string) string {
	h := credentials.ConvertToHostname(strings.TrimSpace(registry))
	if hostKey(h) == "docker.io" || h == "" {
		return dockerHubAuthKey
	}
	return h
}

// CheckLogin verifies user and password against registry the way docker
// login does: it completes the authentication handshake (a token exchange
// for bearer registries) and asks for /v2/, which must then answer 200.
func (r *Resolver) CheckLogin(ctx context.Context, registry, user, password string) error {
	host := credentials.ConvertToHostname(registry)
	if hostKey(host) == "docker.io" {
		host = name.DefaultRegistry
	}
	reg, err := name.NewRegistry(host, r.nameOptions(host)...)
	if err != nil {
		return fmt.Errorf("parsing registry %q: %w", registry, err)
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: user, Password: password})
	tr, err := transport.NewWithContext(ctx, reg, auth, r.transport(), nil)
	if err != nil {
		return fmt.Errorf("logging in to %s: %w", reg, r.explainLogin(ctx, reg, err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return fmt.Errorf("logging in to %s: %w", reg, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("logging in to %s: %w", reg, r.explainLogin(ctx, reg, err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return fmt.Errorf("logging in to %s: %w", reg, r.explainLogin(ctx, reg, err))
	}
	return nil
}

// explainLogin is explain for a login: the credentials tried are the
// ones given, never those of the keychain.
func (r *Resolver) explainLogin(ctx context.Context, reg name.Registry, err error) error {
	e := r.explain(ctx, reg, err)
	var ae *AuthError
	if errors.As(e, &ae) {
		ae.Anonymous, ae.Login = false, true
	}
	return e
}

// dockerConfigDir is $DOCKER_CONFIG, else ~/.docker. Docker's own
// config.Dir reads the environment once per process, which tests that
// switch DOCKER_CONFIG cannot live with.
func dockerConfigDir() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return config.Dir()
	}
	return filepath.Join(home, ".docker")
}

// loadDockerConfig reads the Docker config ($DOCKER_CONFIG/config.json,
// else ~/.docker/config.json) with Docker's own code, so that the file
// kiln writes is the file docker would have written.
func loadDockerConfig() (*configfile.ConfigFile, error) {
	cf, err := config.Load(dockerConfigDir())
	if err != nil {
		// Saving over a config that could not be parsed would lose it.
		return nil, fmt.Errorf("reading the Docker config: %w", err)
	}
	// As docker login does: with no credsStore configured, use the
	// platform's helper (pass, secretservice) when one is installed.
	if cf.CredentialsStore == "" {
		cf.CredentialsStore = credentials.DetectDefaultStore("")
	}
	return cf, nil
}

// SaveLogin stores user and password for registry in the Docker config:
// in its credential helper (credHelpers, credsStore) when one is
// configured, else base64-encoded under "auths". It returns where they
// went, for the message.
func SaveLogin(registry, user, password string) (string, error) {
	cf, err := loadDockerConfig()
	if err != nil {
		return "", err
	}
	addr := ServerAddress(registry)
	store := cf.GetCredentialsStore(addr)
	if err := store.Store(types.AuthConfig{Username: user, Password: password, ServerAddress: addr}); err != nil {
		return "", fmt.Errorf("storing the credentials of %s: %w", addr, err)
	}
	if h := credentialHelper(cf, addr); h != "" {
		return "docker-credential-" + h, nil
	}
	return cf.GetFilename(), nil
}

func credentialHelper(cf *configfile.ConfigFile, addr string) string {
	if h, ok := cf.CredentialHelpers[addr]; ok {
		return h
	}
	return cf.CredentialsStore
}

// Logout removes the credentials of registry from the Docker config and its
// credential helper, under each spelling docker login may have used. It
// reports whether there were any.
func Logout(registry string) (bool, error) {
	cf, err := loadDockerConfig()
	if err != nil {
		return false, err
	}
	addr := ServerAddress(registry)
	keys := []string{addr}
	if addr != dockerHubAuthKey {
		keys = append(keys, "http://"+addr, "https://"+addr)
	}
	found := false
	for _, k := range keys {
		if _, ok := cf.AuthConfigs[k]; !ok {
			// A helper may hold credentials with no "auths" entry left.
			ac, err := cf.GetCredentialsStore(k).Get(k)
			if err != nil || (ac.Username == "" && ac.Password == "" && ac.IdentityToken == "") {
				continue
			}
		}
		found = true
		if err := cf.GetCredentialsStore(k).Erase(k); err != nil {
			return found, fmt.Errorf("removing the credentials of %s: %w", k, err)
		}
	}
	return found, nil
}
