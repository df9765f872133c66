package provenance

import (
	"encoding/csv"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Request is what --provenance and --attest type=provenance asked for.
type Request struct {
	// Set is true when a flag said anything; unset, kiln follows buildx:
	// min on pushes, nothing elsewhere.
	Set bool
	// Disabled is --provenance=false (or --attest …,disabled=true).
	Disabled bool
	Mode     Mode
	// BuilderID is builder-id=, overriding the CI environment.
	BuilderID string
}

// ParseFlag reads a --provenance value in buildx's spellings: true, false,
// min, max, mode=min|max, with builder-id=URI and version=v1 (the only
// SLSA version kiln writes).
func ParseFlag(v string) (Request, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return Request{}, nil
	case "min", "max":
		return Request{Set: true, Mode: Mode(strings.ToLower(v))}, nil
	}
	if b, err := strconv.ParseBool(v); err == nil {
		return Request{Set: true, Disabled: !b, Mode: Min}, nil
	}
	if !strings.Contains(v, "=") {
		return Request{}, fmt.Errorf("--provenance %q: want true, false, mode=min or mode=max", v)
	}
	return parseAttrs(v, "--provenance", false)
}

// ParseAttest reads one --attest flag. Only type=provenance is built;
// type=sbom is refused (kiln writes no SBOM), as is any other type.
func ParseAttest(v string) (Request, error) {
	return parseAttrs(v, "--attest", true)
}

func parseAttrs(v, flag string, needType bool) (Request, error) {
	r := csv.NewReader(strings.NewReader(v))
	r.TrimLeadingSpace = true
	fields, err := r.Read()
	if err != nil {
		return Request{}, fmt.Errorf("%s %q: %w", flag, v, err)
	}
	req := Request{Set: true, Mode: Min}
	typ := ""
	for _, f := range fields {
		k, val, ok := strings.Cut(f, "=")
		if !ok {
			return Request{}, fmt.Errorf("%s %q: field %q is not key=value", flag, v, f)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "type":
			typ = val
		case "mode":
			switch val {
			case "min", "max":
				req.Mode = Mode(val)
			case "full": // BuildKit's old name for max
				req.Mode = Max
			default:
				return Request{}, fmt.Errorf("%s %q: mode=%s: want min or max", flag, v, val)
			}
		case "disabled":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return Request{}, fmt.Errorf("%s %q: disabled=%q is not a boolean", flag, v, val)
			}
			req.Disabled = b
		case "builder-id":
			req.BuilderID = val
		case "version":
			if val != "v1" {
				return Request{}, fmt.Errorf("%s %q: kiln writes SLSA provenance v1 only; drop version= or say version=v1", flag, v)
			}
		default:
			return Request{}, fmt.Errorf("%s %q: unknown key %q (want mode, builder-id, version or disabled)", flag, v, k)
		}
	}
	if needType {
		switch typ {
		case "provenance":
		case "":
			return Request{}, fmt.Errorf("%s %q: missing type=provenance", flag, v)
		case "sbom":
			return Request{}, errors.New("--attest type=sbom: kiln does not generate SBOMs; drop the flag (type=provenance is supported)")
		default:
			return Request{}, fmt.Errorf("%s %q: unknown attestation type %q (kiln supports type=provenance)", flag, v, typ)
		}
	} else if typ != "" && typ != "provenance" {
		return Request{}, fmt.Errorf("%s %q: type= belongs to --attest", flag, v)
	}
	return req, nil
}

// Merge combines --provenance and the --attest flags: a later one wins,
// as in buildx where --provenance is a shorthand for one --attest.
func Merge(reqs ...Request) Request {
	var out Request
	for _, r := range reqs {
		if r.Set {
			out = r
		}
	}
	return out
}

// Resolve decides what one output gets: the explicit request, else min
// when the output is a push (buildx's default), else nothing.
func (r Request) Resolve(push bool) (Mode, bool) {
	if r.Set {
		if r.Disabled {
			return "", false
		}
		return r.Mode, true
	}
	if push {
		return Min, true
	}
	return "", false
}
