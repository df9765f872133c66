package registry

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		want    map[string]HostConfig
		wantErr string
	}{
		{
			name: "buildkitd shape",
			toml: `
debug = true
[worker.oci]
  enabled = true
[registry."docker.io"]
  mirrors = ["127.0.0.1:5000", "harbor.example.com/proxy.docker.io"]
  http = true
  insecure = true
  ca = ["/etc/ca.pem"]
  [[registry."docker.io".keypair]]
    key = "/etc/key.pem"
    cert = "/etc/cert.pem"
[registry."127.0.0.1:5000"]
  http = true
`,
			want: map[string]HostConfig{
				"docker.io": {
					Mirrors:  []string{"127.0.0.1:5000", "harbor.example.com/proxy.docker.io"},
					HTTP:     true,
					Insecure: true,
					CA:       []string{"/etc/ca.pem"},
					KeyPairs: []KeyPair{{Key: "/etc/key.pem", Cert: "/etc/cert.pem"}},
				},
				"127.0.0.1:5000": {HTTP: true},
			},
		},
		{
			name: "Docker Hub's other names",
			toml: `[registry."index.docker.io"]
mirrors = ["m:1"]`,
			want: map[string]HostConfig{"docker.io": {Mirrors: []string{"m:1"}}},
		},
		{
			name:    "one host twice",
			toml:    "[registry.\"docker.io\"]\nhttp = true\n[registry.\"index.docker.io\"]\nhttp = true\n",
			wantErr: "configured twice",
		},
		{
			name:    "mirror with a scheme",
			toml:    `[registry."docker.io"]` + "\nmirrors = [\"http://m:5000\"]\n",
			wantErr: "without a scheme",
		},
		{
			name:    "not TOML",
			toml:    "[registry.\"docker.io\"\nmirrors =",
			wantErr: "parsing kiln config",
		},
		{
			name:    "wrong type",
			toml:    "[registry.\"docker.io\"]\nmirrors = \"m:5000\"\n",
			wantErr: "parsing kiln config",
		},
		{name: "empty", toml: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "kiln.toml")
			if err := os.WriteFile(p, []byte(tt.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Registry) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(c.Registry, tt.want) {
				t.Errorf("got %+v\nwant %+v", c.Registry, tt.want)
			}
		})
	}
}

func TestLoadConfigMissing(t *testing.T) {
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "absent.toml")); err == nil {
		t.Error("a missing $KILN_CONFIG file was not reported")
	}
	if _, err := os.Stat(DefaultConfigPath); err == nil {
		testutil.SkipHostf(t, "%s exists on this machine", DefaultConfigPath)
	}
	if _, err := LoadConfig(DefaultConfigPath); err != nil {
		t.Errorf("a missing default config is an error: %v", err)
	}
}

func TestConfigPath(t *testing.T) {
	t.Setenv("KILN_CONFIG", "")
	if got := ConfigPath(); got != DefaultConfigPath {
		t.Errorf("ConfigPath() = %q without KILN_CONFIG", got)
	}
	t.Setenv("KILN_CONFIG", "/x/kiln.toml")
	if got := ConfigPath(); got != "/x/kiln.toml" {
		t.Errorf("ConfigPath() = %q with KILN_CONFIG=/x/kiln.toml", got)
	}
}

func TestParseMirrorFlag(t *testing.T) {
	tests := []struct {
		flag, host, mirror string
		http               bool
		wantErr            string
	}{
		{flag: "127.0.0.1:5000", host: "docker.io", mirror: "127.0.0.1:5000"},
		{flag: "docker.io=127.0.0.1:5000", host: "docker.io", mirror: "127.0.0.1:5000"},
		{flag: "index.docker.io=m.example.com/hub", host: "docker.io", mirror: "m.example.com/hub"},
		{flag: "ghcr.io=http://10.0.0.1:5000", host: "ghcr.io", mirror: "10.0.0.1:5000", http: true},
		{flag: "quay.io=https://m.example.com", host: "quay.io", mirror: "m.example.com"},
		{flag: "=m:5000", wantErr: "want REGISTRY="},
		{flag: "docker.io=", wantErr: "want HOST"},
		{flag: "docker.io=m:5000/", wantErr: "want HOST"},
		{flag: "docker.io=ftp://m", wantErr: "without a scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			host, mirror, plain, err := ParseMirrorFlag(tt.flag)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if host != tt.host || mirror != tt.mirror || plain != tt.http {
				t.Errorf("got (%q, %q, %v), want (%q, %q, %v)", host, mirror, plain, tt.host, tt.mirror, tt.http)
			}
		})
	}
}
