package export

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Output is one parsed -o/--output flag.
type Output struct {
	// Type is "oci", "docker", "local", "tar" or "registry" (also for
	// buildx's type=image,push=true).
	Type string
	// Dest is the file (oci, docker, tar) or directory (local, oci with
	// tar=false) written; StdoutDest for a stream. A docker output without
	// Dest is for a Docker engine to load (the caller's --load).
	Dest string
	// Tar is true when Dest is a single tar file: always for docker and
	// tar, by default for oci, never for local.
	Tar bool
	// Attrs holds the keys other than type, dest and tar, as given; "name"
	// (comma-separated image names) replaces the build's -t names for this
	// output, as in buildx.
	Attrs map[string]string
	// Pusher pushes a registry output; nil means DefaultPusher.
	Pusher Pusher
	// Attest, when set, attaches attestations (provenance) to an oci or
	// registry output, which then holds an index of the image and its
	// attestation manifest. Other types cannot hold them: Write refuses.
	Attest Attester
	// Stdout receives an output whose Dest is StdoutDest (stream.go).
	Stdout io.Writer
}

// keysByType lists the keys each output type accepts beyond type and dest;
// anything else is refused rather than silently ignored, because a
// misspelt key (tar=flase, dset=…) would otherwise write somewhere
// unexpected.
var keysByType = map[string][]string{
	"oci":    {"tar", "name", "compression", "compression-level", "force-compression", "rewrite-timestamp"},
	"docker": {"name", "compression", "compression-level", "force-compression", "rewrite-timestamp"},
	"local":  nil,
	"tar":    nil,
	// push is accepted for buildx compatibility; type=registry always
	// pushes, type=image needs push=true (see parseOutput).
	"registry": {"name", "push", "oci-mediatypes", "compression", "compression-level", "force-compression", "rewrite-timestamp"},
}

// ParseOutputs parses repeated -o/--output flags in buildx syntax:
//
//	type=oci,dest=out.tar           OCI layout as a tar file
//	type=oci,dest=dir,tar=false     OCI layout directory
//	type=docker,dest=x.tar          `docker load` tarball
//	type=local,dest=dir             the root filesystem as a directory
//	type=tar,dest=x.tar             the root filesystem as a tar file
//	type=registry[,name=N]          push to the -t names (or name=)
//	type=image,push=true            the same, in buildx's other spelling
//	…,oci-mediatypes=false          (registry) Docker schema 2 media types
//	…,rewrite-timestamp=false       (oci, docker, registry) keep file mtimes
//	                                under SOURCE_DATE_EPOCH
//	DIR                             shorthand for type=local,dest=DIR
func ParseOutputs(specs []string) ([]Output, error) {
	outs := make([]Output, 0, len(specs))
	for _, spec := range specs {
		out, err := parseOutput(spec)
		if err != nil {
			return nil, fmt.Errorf("parsing output %q: %w", spec, err)
		}
		outs = append(outs, out)
	}
	return outs, nil
}

func parseOutput(spec string) (Output, error) {
	if spec == StdoutDest {
		// buildx: -o - is the root filesystem as a tar on stdout.
		return Output{Type: "tar", Dest: StdoutDest, Tar: true, Attrs: map[string]string{}}, nil
	}
	if spec == "" {
		return Output{}, errors.New("empty output")
	}
	// buildx: a value with no key=value pair at all is a local directory.
	if !strings.Contains(spec, "=") {
		return Output{Type: "local", Dest: spec, Attrs: map[string]string{}}, nil
	}

	// CSV, like buildx, so a quoted value may hold a comma: "name=a,b".
	r := csv.NewReader(strings.NewReader(spec))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	fields, err := r.Read()
	if err != nil {
		return Output{}, err
	}
	out := Output{Attrs: map[string]string{}}
	var tarValue string
	seen := map[string]bool{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Output{}, fmt.Errorf("field %q is not key=value", f)
		}
		if k = strings.TrimSpace(k); !isAnnotationAttr(k) {
			// An annotation's key keeps its case.
			k = strings.ToLower(k)
		}
		if seen[k] {
			return Output{}, fmt.Errorf("key %q given twice", k)
		}
		seen[k] = true
		switch k {
		case "type":
			out.Type = v
		case "dest":
			out.Dest = v
		case "tar":
			tarValue = v
		default:
			out.Attrs[k] = v
		}
	}

	switch out.Type {
	case "":
		return Output{}, errors.New("missing type= (want oci, docker, local, tar or registry)")
	case "oci", "docker", "local", "tar":
	case "registry":
	case "image":
		// buildx's image exporter names an image in the daemon's store and
		// pushes it only with push=true; kiln records -t names in its own
		// store whatever the outputs, so only the push is left to do.
		if p, _ := strconv.ParseBool(out.Attrs["push"]); !p {
			return Output{}, errors.New("type=image only pushes here (kiln's store records -t names by itself); add push=true, or use type=registry")
		}
		out.Type = "registry"
	default:
		return Output{}, fmt.Errorf("unknown output type %q (want oci, docker, local, tar or registry)", out.Type)
	}
	allowed := keysByType[out.Type]
	if tarValue != "" && !slices.Contains(allowed, "tar") {
		return Output{}, fmt.Errorf("unknown key \"tar\" for type=%s (only type=oci has tar=false)", out.Type)
	}
	if out.Type == "registry" {
		return checkRegistryOutput(out)
	}
	for k := range out.Attrs {
		if !slices.Contains(allowed, k) && !(isAnnotationAttr(k) && out.Type != "local" && out.Type != "tar") {
			return Output{}, fmt.Errorf("unknown key %q for type=%s", k, out.Type)
		}
	}
	if _, err := annotationsOf(out); err != nil {
		return Output{}, err
	}

	if err := checkCompression(out); err != nil {
		return Output{}, err
	}
	if _, _, err := RewriteTimestamp(out); err != nil {
		return Output{}, err
	}
	if err := streamDest(&out, tarValue); err != nil {
		return Output{}, err
	}
	if out.Dest == "" && out.Type != "docker" {
		// type=docker without dest= is loaded into a Docker engine by
		// the caller (--load), as buildx does.
		return Output{}, fmt.Errorf("type=%s needs dest=", out.Type)
	}

	out.Tar = out.Type != "local"
	if tarValue != "" {
		b, err := strconv.ParseBool(tarValue)
		if err != nil {
			return Output{}, fmt.Errorf("tar=%q is not a boolean", tarValue)
		}
		out.Tar = b
	}
	return out, nil
}

// Write exports img to out. names are the build's -t names; an output's own
// name= attribute replaces them.
func Write(ctx context.Context, img v1.Image, out Output, names []string) error {
	if n, ok := out.Attrs["name"]; ok {
		names = nil
		for _, s := range strings.Split(n, ",") {
			if s = strings.TrimSpace(s); s != "" {
				names = append(names, s)
			}
		}
	}
	if out.Dest == StdoutDest {
		if out.Stdout == nil {
			return fmt.Errorf("writing type=%s to stdout: no stream given", out.Type)
		}
		ctx = withStream(ctx, out.Stdout)
	}
	if out.Attest != nil && out.Type != "oci" && out.Type != "registry" {
		return fmt.Errorf("writing type=%s: attestations need an oci or registry output", out.Type)
	}
	switch out.Type {
	case "oci":
		a, err := annotate(img, out, func(img v1.Image) (Artifact, error) { return Attach(img, out.Attest, names, true) })
		if err != nil {
			return err
		}
		if idx, ok := a.(v1.ImageIndex); ok {
			if out.Tar {
				return OCIIndexArchive(ctx, idx, out.Dest, names)
			}
			return OCIIndexLayout(ctx, idx, out.Dest, names)
		}
		img = a.(v1.Image)
		if out.Tar {
			return OCIArchive(ctx, img, out.Dest, names)
		}
		return OCILayout(ctx, img, out.Dest, names)
	case "docker":
		a, err := annotate(img, out, func(img v1.Image) (Artifact, error) { return img, nil })
		if err != nil {
			return err
		}
		return DockerArchive(ctx, a.(v1.Image), out.Dest, names)
	case "local":
		return Local(ctx, img, out.Dest)
	case "tar":
		return RootfsTar(ctx, img, out.Dest)
	case "registry":
		p := out.Pusher
		if p == nil {
			p = DefaultPusher
		}
		oci := true
		if v, ok := out.Attrs["oci-mediatypes"]; ok {
			oci, _ = strconv.ParseBool(v) // checked by ParseOutputs
		}
		return pushOutput(ctx, p, img, names, oci, out.Attest, out)
	default:
		return fmt.Errorf("writing output: unknown type %q", out.Type)
	}
}

// checkRegistryOutput checks the keys of a registry output, which has no
// dest and no tar.
func checkRegistryOutput(out Output) (Output, error) {
	if out.Dest != "" {
		return Output{}, errors.New("type=registry takes no dest=; it pushes to the -t names or name=")
	}
	if err := checkCompression(out); err != nil {
		return Output{}, err
	}
	if _, err := annotationsOf(out); err != nil {
		return Output{}, err
	}
	for k, v := range out.Attrs {
		if isAnnotationAttr(k) {
			continue
		}
		if !slices.Contains(keysByType["registry"], k) {
			return Output{}, fmt.Errorf("unknown key %q for type=registry", k)
		}
		switch k {
		case "push", "oci-mediatypes", "rewrite-timestamp":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Output{}, fmt.Errorf("%s=%q is not a boolean", k, v)
			}
			if k == "push" && !b {
				return Output{}, errors.New("type=registry with push=false would do nothing")
			}
		}
	}
	return out, nil
}

// RewriteTimestamp reads an image output's rewrite-timestamp= (BuildKit's
// exporter option): whether the mtimes of files in the layers the build
// creates are clamped to SOURCE_DATE_EPOCH. set is false when the output
// does not say; kiln then clamps whenever the epoch is set.
func RewriteTimestamp(out Output) (on, set bool, err error) {
	v, ok := out.Attrs["rewrite-timestamp"]
	if !ok {
		return false, false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, false, fmt.Errorf("rewrite-timestamp=%q is not a boolean", v)
	}
	return b, true, nil
}

// checkCompression validates compression= (gzip, zstd, uncompressed) and
// compression-level= (gzip 1-9, zstd 1-22).
func checkCompression(out Output) error {
	c, err := CompressionOf(out)
	if err != nil {
		return err
	}
	if v, ok := out.Attrs["force-compression"]; ok {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("force-compression=%q is not a boolean", v)
		}
	}
	max := map[string]int{"gzip": 9, "zstd": 22, "uncompressed": 0}[c.Kind]
	if c.Level < 0 || c.Level > max {
		return fmt.Errorf("compression-level=%d is out of range for %s (1 to %d)", c.Level, c.Kind, max)
	}
	return nil
}

// Compression is the layer encoding an output asks for.
type Compression struct {
	Kind  string // gzip (default), zstd or uncompressed
	Level int    // 0: the codec's default
}

// CompressionOf reads an output's compression= and compression-level=.
func CompressionOf(out Output) (Compression, error) {
	c := Compression{Kind: "gzip"}
	if v, ok := out.Attrs["compression"]; ok {
		switch v {
		case "gzip", "zstd", "uncompressed":
			c.Kind = v
		default:
			return c, fmt.Errorf("compression=%q: want gzip, zstd or uncompressed", v)
		}
	}
	if v, ok := out.Attrs["compression-level"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return c, fmt.Errorf("compression-level=%q is not a number", v)
		}
		c.Level = n
	}
	return c, nil
}
