package parser

import (
	"strings"
	"testing"
)

// The Dockerfile frontend under any registry, tag or digest is kiln's
// builtin frontend; anything else is refused with its line.
func TestSyntaxLines(t *testing.T) {
	const digest = "sha256:93bfd3b68c109427185cd78b4779fc82b484b0b7618e36d0f104d4d801e66d25"
	tests := []struct {
		ref  string
		ok   bool
		labs bool
	}{
		{"docker/dockerfile:1", true, false},
		{"docker/dockerfile", true, false},
		{"docker.io/docker/dockerfile:1", true, false},
		{"index.docker.io/docker/dockerfile:1.7", true, false},
		{"mirror.gcr.io/docker/dockerfile:1.9-labs", true, true},
		{"docker/dockerfile:labs", true, true},
		{"docker/dockerfile@" + digest, true, false},
		{"docker/dockerfile:1.7@" + digest, true, false},
		{"ghcr.io/docker/dockerfile:1", true, false},
		{"localhost:5000/docker/dockerfile-upstream:master-labs", true, true},
		{"registry.example.com:5000/docker/dockerfile-upstream:1", true, false},
		{"docker/dockerfile-upstream:master", true, false},
		{"ghcr.io/acme/dockerfile:1", false, false},
		{"acme/docker/dockerfile:1", false, false},
		{"example.com/x:1", false, false},
		{"docker/dockerfile-custom:1", false, false},
		{"tonistiigi/dockerfile:runmount", false, false},
		{"dockerfile:1", false, false},
		{"example.com/mirror/docker/dockerfile:1", false, false},
	}
	for _, tt := range tests {
		ok, labs := dockerfileFrontend(tt.ref)
		if ok != tt.ok || labs != tt.labs {
			t.Errorf("dockerfileFrontend(%q) = %v, %v; want %v, %v", tt.ref, ok, labs, tt.ok, tt.labs)
		}
		src := "# syntax=" + tt.ref + "\n\nFROM scratch\n"
		_, err := Parse("Dockerfile", []byte(src))
		if tt.ok && err != nil {
			t.Errorf("%s: %v", tt.ref, err)
		}
		if !tt.ok {
			if err == nil || !strings.Contains(err.Error(), "Dockerfile:1: syntax") || !strings.Contains(err.Error(), "remove the # syntax line") {
				t.Errorf("%s: error %v, want a refusal naming line 1 and what to do", tt.ref, err)
			}
		}
	}
}
