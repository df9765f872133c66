package planner

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPlatformArgs(t *testing.T) {
	build := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	for _, tt := range []struct {
		target ocispec.Platform
		want   map[string]string
	}{
		{ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, map[string]string{
			"TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7",
			"BUILDPLATFORM": "linux/amd64", "BUILDARCH": "amd64", "BUILDVARIANT": "",
		}},
		{ocispec.Platform{OS: "linux", Architecture: "arm64"}, map[string]string{
			"TARGETPLATFORM": "linux/arm64", "TARGETARCH": "arm64", "TARGETVARIANT": "",
		}},
	} {
		env := defaultArgs(map[string]string{"BUILDOS": "overridden"}, "app", build, tt.target)
		for k, want := range tt.want {
			if got, _ := env.Get(k); got != want {
				t.Errorf("%s for %v = %q, want %q", k, tt.target, got, want)
			}
		}
		if got, _ := env.Get("BUILDOS"); got != "overridden" {
			t.Errorf("--build-arg BUILDOS was not kept: %q", got)
		}
	}
}

func TestPlatformPrefix(t *testing.T) {
	amd := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm := ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	for _, tt := range []struct {
		multi         bool
		stage, target ocispec.Platform
		want          string
	}{
		{false, arm, arm, ""},
		{true, arm, arm, "linux/arm/v7 "},
		{true, amd, arm, "linux/amd64->arm/v7 "},
	} {
		b := &build{opt: Options{MultiPlatform: tt.multi, Platform: tt.target}}
		if got := b.platformPrefix(tt.stage); got != tt.want {
			t.Errorf("prefix of a %v stage building %v = %q, want %q", tt.stage, tt.target, got, tt.want)
		}
	}
}

// Records made before kiln built other platforms were all linux/amd64:
// its keys do not change; every other platform's do.
func TestPlatformKey(t *testing.T) {
	key := func(p ocispec.Platform) string {
		k := newStepKey("scratch", "")
		addPlatformKey(k, p)
		return k.sum()
	}
	legacy := newStepKey("scratch", "").sum()
	if key(ocispec.Platform{OS: "linux", Architecture: "amd64"}) != legacy {
		t.Error("the linux/amd64 key changed")
	}
	arm64 := key(ocispec.Platform{OS: "linux", Architecture: "arm64"})
	armv7 := key(ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"})
	if arm64 == legacy || armv7 == legacy || arm64 == armv7 {
		t.Error("two platforms share a key")
	}
}
