package platform

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestPick(t *testing.T) {
	d := func(n byte, os, arch, variant string) v1.Descriptor {
		h := v1.Hash{Algorithm: "sha256", Hex: string([]byte{'a' + n})}
		if os == "" {
			return v1.Descriptor{Digest: h}
		}
		return v1.Descriptor{Digest: h, Platform: &v1.Platform{OS: os, Architecture: arch, Variant: variant}}
	}
	armOnly := []v1.Descriptor{d(0, "linux", "arm", "v5"), d(1, "linux", "arm", "v6"), d(2, "unknown", "unknown", "")}
	full := []v1.Descriptor{d(0, "linux", "amd64", ""), d(1, "linux", "arm", "v6"), d(2, "linux", "arm", "v7"), d(3, "linux", "arm64", "v8"), d(4, "linux", "riscv64", "")}
	for _, tt := range []struct {
		name  string
		index []v1.Descriptor
		want  string
		got   int // index into index; -1 = none
	}{
		{"arm/v7 takes v6 before v5", armOnly, "linux/arm/v7", 1},
		{"arm/v6 takes v6", armOnly, "linux/arm/v6", 1},
		{"arm/v5 refuses v6", armOnly[1:], "linux/arm/v5", -1},
		{"arm/v7 exact", full, "linux/arm/v7", 2},
		{"arm64 matches arm64/v8", full, "linux/arm64", 3},
		{"amd64", full, "linux/amd64", 0},
		{"riscv64", full, "linux/riscv64", 4},
		{"s390x missing", full, "linux/s390x", -1},
		{"no platform is amd64", []v1.Descriptor{d(0, "", "", "")}, "linux/amd64", 0},
		{"no platform is not arm64", []v1.Descriptor{d(0, "", "", "")}, "linux/arm64", -1},
		{"attestation is never picked", armOnly[2:], "linux/amd64", -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want, err := Parse(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := Pick(tt.index, want)
			if tt.got < 0 {
				if ok {
					t.Fatalf("picked %v, want none", got.Platform)
				}
				return
			}
			if !ok || got.Digest != tt.index[tt.got].Digest {
				t.Fatalf("picked %v (%v), want entry %d", got.Platform, ok, tt.got)
			}
		})
	}
}

func TestParseList(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"linux/amd64,linux/arm64", "linux/amd64 linux/arm64"},
		{"linux/arm64, linux/aarch64", "linux/arm64"},
		{"linux/arm", "linux/arm/v7"},
		{"linux/arm64/v8", "linux/arm64"},
	} {
		ps, err := ParseList(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		for i, p := range ps {
			if i > 0 {
				got += " "
			}
			got += Format(p)
		}
		if got != tt.want {
			t.Errorf("ParseList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if _, err := ParseList("linux/amd64,not/a/plat/form"); err == nil {
		t.Error("a bad platform was accepted")
	}
	if DirName(Native()) == "" {
		t.Error("no dir name")
	}
}
