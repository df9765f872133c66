package registry

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Limits bound what kiln reads from a registry: its answers are untrusted,
// and a manifest, config or layer of absurd size must fail the build with a
// clear message instead of exhausting memory or disk. Zero fields take the
// defaults of DefaultLimits; kiln.toml's [limits] table sets them.
type Limits struct {
	// ManifestSize bounds one manifest or index, as read from the
	// registry.
	ManifestSize Size `toml:"manifest-size"`
	// ConfigSize bounds an image config: its size as the manifest
	// declares it, checked before anything is fetched.
	ConfigSize Size `toml:"config-size"`
	// IndexDepth bounds how many image indexes may lead to the image
	// (an index naming an index naming an image is depth 2).
	IndexDepth int `toml:"index-depth"`
	// LayerSize bounds the unpacked (uncompressed) size of one layer; the
	// store enforces it while unpacking.
	LayerSize Size `toml:"layer-size"`
}

// DefaultLimits are generous for real images and far below what would
// hurt the machine:
//   - 4 MiB manifests: the size the OCI distribution spec asks clients and
//     registries to support, and what the distribution registry serves at
//     most;
//   - 8 MiB configs: real ones are a few KiB, tens of KiB with a long
//     history;
//   - 8 levels of nested indexes: published images use one;
//   - 64 GiB for one unpacked layer: above the largest layers published
//     (CUDA, ML frameworks: a few GiB to ~20 GiB).
var DefaultLimits = Limits{
	ManifestSize: 4 << 20,
	ConfigSize:   8 << 20,
	IndexDepth:   8,
	LayerSize:    64 << 30,
}

// WithDefaults returns l with its zero fields set from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	if l.ManifestSize == 0 {
		l.ManifestSize = DefaultLimits.ManifestSize
	}
	if l.ConfigSize == 0 {
		l.ConfigSize = DefaultLimits.ConfigSize
	}
	if l.IndexDepth == 0 {
		l.IndexDepth = DefaultLimits.IndexDepth
	}
	if l.LayerSize == 0 {
		l.LayerSize = DefaultLimits.LayerSize
	}
	return l
}

func (l Limits) check() error {
	switch {
	case l.ManifestSize < 0:
		return fmt.Errorf("manifest-size %d: want a positive size", l.ManifestSize)
	case l.ConfigSize < 0:
		return fmt.Errorf("config-size %d: want a positive size", l.ConfigSize)
	case l.IndexDepth < 0:
		return fmt.Errorf("index-depth %d: want a positive number", l.IndexDepth)
	case l.LayerSize < 0:
		return fmt.Errorf("layer-size %d: want a positive size", l.LayerSize)
	}
	return nil
}

// Size is a number of bytes. In kiln.toml it is an integer, or a string
// with a binary unit as Docker's flags take it ("4MiB", "64g", "512m").
type Size int64

// UnmarshalText reads a size string such as "4MiB".
func (s *Size) UnmarshalText(b []byte) error {
	n, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// String shows s with the largest binary unit that divides it.
func (s Size) String() string {
	n := int64(s)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + " " + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// ParseSize reads a size as Docker does: a number with an optional binary
// unit, b, k, m, g or t, in either case and optionally followed by b or ib
// ("64m", "1.5GiB", "512MB"); a bare number is bytes.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num := strings.TrimRightFunc(s, func(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' })
	unit := strings.ToLower(s[len(num):])
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "b"), "i")
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30, "t": 40}
	sh, ok := shift[unit]
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if !ok || num == "" || err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("size %q: want a size such as 4MiB or 64g", s)
	}
	n *= float64(uint64(1) << sh)
	if n >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(n), nil
}

// TooLargeError is a registry answer larger than kiln's limit for it.
type TooLargeError struct {
	// What was being read: "manifest", "config", ...
	What string
	// Where names it: a URL or a reference.
	Where string
	// Size is the size declared or read so far; Limit the limit.
	Size, Limit int64
	// Setting is the kiln.toml key (under [limits]) or flag raising the
	// limit.
	Setting string
}

func (e *TooLargeError) Error() string {
	size := "more than " + Size(e.Limit).String()
	if e.Size > e.Limit {
		size = Size(e.Size).String()
	}
	return fmt.Sprintf("the %s of %s is %s, over kiln's limit of %s: the registry's answer is refused (if the image is genuine, raise the limit with %s)",
		e.What, e.Where, size, Size(e.Limit).String(), e.Setting)
}

// limitedBody reads at most limit bytes of a response body and fails with
// a TooLargeError beyond it, so that the reader (go-containerregistry's
// own 100 MiB cap is far above ours) never holds more.
type limitedBody struct {
	io.ReadCloser
	left int64
	err  *TooLargeError
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a
		// longer one.
		var one [1]byte
		for {
			n, err := b.ReadCloser.Read(one[:])
			if n > 0 {
				return 0, b.err
			}
			if err != nil {
				return 0, err
			}
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
