package main

import (
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestRemoteCredentials: X-Registry-Config and X-Registry-Auth carry the
// credentials of the Docker config that kiln login and docker login
// write.
func TestRemoteCredentials(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfg)
	auth := base64.StdEncoding.EncodeToString([]byte("u:p"))
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), []byte(`{"auths":{"reg.example:5000":{"auth":"`+auth+`"}},"credsStore":""}`), 0o600); err != nil {
		t.Fatal(err)
	}
	all := pullCredentials(io.Discard)
	if a, ok := all["reg.example:5000"]; !ok || a.Username != "u" || a.Password != "p" {
		t.Errorf("pull credentials %+v, want u:p for reg.example:5000", all)
	}
	a, err := registryAuth("reg.example:5000")
	if err != nil || a.Username != "u" || a.Password != "p" || a.ServerAddress != "reg.example:5000" {
		t.Errorf("push credentials %+v, %v", a, err)
	}
	a, err = registryAuth("other.example")
	if err != nil || a.Username != "" || a.Password != "" {
		t.Errorf("credentials of a registry with none: %+v, %v", a, err)
	}
}

// TestRemoteHostScope: only the root command's --host makes a client;
// the build kiln serve runs, a command of its own, stays local even with
// KILN_HOST set.
func TestRemoteHostScope(t *testing.T) {
	t.Setenv("KILN_HOST", "unix:///nonexistent.sock")
	root := "/nonexistent"
	standalone := newBuildCmd(&root)
	if h := remoteHost(standalone); h != "" {
		t.Errorf("kiln serve's build command would be sent to %q", h)
	}
	cmd := newRootCmd()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"build"}, "unix:///nonexistent.sock"},
		{[]string{"serve"}, ""},
	} {
		c, _, err := cmd.Find(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if h := remoteHost(c); h != tc.want {
			t.Errorf("kiln %v: host %q, want %q", tc.args, h, tc.want)
		}
	}
}
