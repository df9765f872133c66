package testutil

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestDebianImage(t *testing.T) {
	img := DebianImage(t)
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || strings.Join(cfg.Config.Cmd, " ") != "bash" ||
		strings.Join(cfg.Config.Env, " ") != DefaultPath {
		t.Errorf("config %+v", cfg)
	}

	reg := Registry(t)
	ref := PushDebian(t, reg)
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := pulled.Digest()
	want, _ := img.Digest()
	if got != want {
		t.Errorf("pulled %s from %s, pushed %s", got, ref, want)
	}
}
