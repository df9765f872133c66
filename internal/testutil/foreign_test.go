package testutil

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/emulate"
)

func TestForeignBusyboxBinary(t *testing.T) {
	tests := []struct{ platform, uname string }{
		{"linux/arm64", "aarch64"},
		{"linux/arm/v7", "armv7l"},
	}
	for _, tc := range tests {
		t.Run(tc.platform, func(t *testing.T) {
			bin, err := ForeignBusyboxBinary(context.Background(), tc.platform)
			var skip *SkipError
			if errors.As(err, &skip) {
				SkipHost(t, skip.Reason)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := emulate.Check(tc.platform); err != nil {
				SkipHost(t, err)
			}
			out, err := exec.Command(bin, "uname", "-m").Output()
			if err != nil {
				t.Fatalf("running %s under QEMU: %v", bin, err)
			}
			if got := strings.TrimSpace(string(out)); got != tc.uname {
				t.Errorf("uname -m = %q, want %q", got, tc.uname)
			}
		})
	}
}

func TestDebianFor(t *testing.T) {
	if testing.Short() {
		t.Skip("the first run debootstraps arm64 Debian under QEMU (minutes)")
	}
	img := DebianFor(t, "linux/arm64")
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "arm64" || strings.Join(cfg.Config.Cmd, " ") != "bash" ||
		strings.Join(cfg.Config.Env, " ") != DefaultPath {
		t.Errorf("config %+v", cfg)
	}
	ref := PushDebianFor(t, Registry(t), "linux/arm64")
	if !strings.HasSuffix(ref, "/library/debian:bookworm-arm64") {
		t.Errorf("pushed as %s", ref)
	}
}
