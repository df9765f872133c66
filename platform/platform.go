// Package platform names the platforms a build is for: parsing
// --platform and FROM --platform, the native (build) platform, picking an
// image of an index with containerd's matching rules (linux/arm/v7 takes a
// v6 or v5 image when the index has no v7), and the names outputs use for
// each platform (linux_arm64/, as buildx writes them).
package platform

import (
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Legacy is the platform every build was for before kiln knew others: an
// index entry without a platform is taken as it (as Docker and
// go-containerregistry do), and step keys of its stages keep the shape
// they had then, so existing caches stay valid.
var Legacy = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// Native is the platform of this machine: BUILDPLATFORM, and the target
// when --platform is not given.
func Native() ocispec.Platform {
	return platforms.Normalize(platforms.DefaultSpec())
}

// Parse reads one platform ("linux/arm64", "arm64", "linux/arm/v7") and
// normalises it (aarch64 is arm64, arm64/v8 is arm64, arm is arm/v7).
func Parse(s string) (ocispec.Platform, error) {
	p, err := platforms.Parse(strings.TrimSpace(s))
	if err != nil {
		return ocispec.Platform{}, err
	}
	return platforms.Normalize(p), nil
}

// ParseList reads --platform's comma-separated list, dropping repeats; an
// empty list is the native platform alone.
func ParseList(s string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		p, err := Parse(f)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", strings.TrimSpace(f), err)
		}
		if id := Format(p); !seen[id] {
			seen[id] = true
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		out = append(out, Native())
	}
	return out, nil
}

// Format is "os/arch[/variant]".
func Format(p ocispec.Platform) string { return platforms.Format(platforms.Normalize(p)) }

// Equal reports whether a and b are the same platform once normalised.
func Equal(a, b ocispec.Platform) bool { return Format(a) == Format(b) }

// DirName is the directory (or tar prefix) of p's files in a
// multi-platform local or tar output: "linux_arm64", "linux_arm_v7".
func DirName(p ocispec.Platform) string { return strings.ReplaceAll(Format(p), "/", "_") }

// V1 converts p to go-containerregistry's type.
func V1(p ocispec.Platform) v1.Platform {
	return v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion, OSFeatures: p.OSFeatures}
}

// FromV1 converts a go-containerregistry platform.
func FromV1(p v1.Platform) ocispec.Platform {
	return ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion, OSFeatures: p.OSFeatures}
}

// Pick returns the entry of an index that serves want best, with
// containerd's rules (platforms.Only): an exact match first, then a
// compatible one (arm/v7 takes v6, then v5; amd64 takes 386). An entry
// without a platform counts as Legacy.
func Pick(ds []v1.Descriptor, want ocispec.Platform) (v1.Descriptor, bool) {
	m := platforms.Only(want)
	var best v1.Descriptor
	var bestP ocispec.Platform
	found := false
	for _, d := range ds {
		p := Legacy
		if d.Platform != nil {
			p = FromV1(*d.Platform)
		}
		if !m.Match(p) {
			continue
		}
		if !found || m.Less(p, bestP) {
			best, bestP, found = d, p, true
		}
	}
	return best, found
}

// Matches reports whether an image whose config says os/arch/variant can
// serve want (with the same compatibility rules as Pick). A config without
// an os or architecture matches anything: nothing says it does not.
func Matches(os, arch, variant string, want ocispec.Platform) bool {
	if os == "" || arch == "" {
		return true
	}
	return platforms.Only(want).Match(ocispec.Platform{OS: os, Architecture: arch, Variant: variant})
}
