package export

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Output is one parsed -o/--output flag.
type Output struct {
	// Type is "oci", "docker", "local" or "tar".
	Type string
	// Dest is the file (oci, docker, tar) or directory (local, oci with
	// tar=false) written.
	Dest string
	// Tar is true when Dest is a single tar file: always for docker and
	// tar, by default for oci, never for local.
	Tar bool
	// Attrs holds the keys other than type, dest and tar, as given; "name"
	// (comma-separated image names) replaces the build's -t names for this
	// output, as in buildx.
	Attrs map[string]string
}

// keysByType lists the keys each output type accepts beyond type and dest;
// anything else is refused rather than silently ignored, because a
// misspelt key (tar=flase, dset=…) would otherwise write somewhere
// unexpected.
var keysByType = map[string][]string{
	"oci":    {"tar", "name"},
	"docker": {"name"},
	"local":  nil,
	"tar":    nil,
}

// ParseOutputs parses repeated -o/--output flags in buildx syntax:
//
//	type=oci,dest=out.tar           OCI layout as a tar file
//	type=oci,dest=dir,tar=false     OCI layout directory
//	type=docker,dest=x.tar          `docker load` tarball
//	type=local,dest=dir             the root filesystem as a directory
//	type=tar,dest=x.tar             the root filesystem as a tar file
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
	if spec == "-" {
		return Output{}, errors.New("writing to stdout is not supported yet; give a file with type=…,dest=FILE")
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
		k = strings.ToLower(strings.TrimSpace(k))
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
		return Output{}, errors.New("missing type= (want oci, docker, local or tar)")
	case "oci", "docker", "local", "tar":
	case "image", "registry":
		return Output{}, fmt.Errorf("type %q is not an -o output in kiln; use --push with -t", out.Type)
	default:
		return Output{}, fmt.Errorf("unknown output type %q (want oci, docker, local or tar)", out.Type)
	}
	allowed := keysByType[out.Type]
	if tarValue != "" && !slices.Contains(allowed, "tar") {
		return Output{}, fmt.Errorf("unknown key \"tar\" for type=%s (only type=oci has tar=false)", out.Type)
	}
	for k := range out.Attrs {
		if !slices.Contains(allowed, k) {
			return Output{}, fmt.Errorf("unknown key %q for type=%s", k, out.Type)
		}
	}

	switch out.Dest {
	case "":
		return Output{}, fmt.Errorf("type=%s needs dest=", out.Type)
	case "-":
		return Output{}, errors.New("writing to stdout (dest=-) is not supported yet; give a file")
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
	switch out.Type {
	case "oci":
		if out.Tar {
			return OCIArchive(ctx, img, out.Dest, names)
		}
		return OCILayout(ctx, img, out.Dest, names)
	case "docker":
		return DockerArchive(ctx, img, out.Dest, names)
	case "local":
		return Local(ctx, img, out.Dest)
	case "tar":
		return RootfsTar(ctx, img, out.Dest)
	default:
		return fmt.Errorf("writing output: unknown type %q", out.Type)
	}
}
