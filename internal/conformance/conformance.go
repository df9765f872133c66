// Package conformance compares an image kiln built with the expected result
// recorded from BuildKit: the runtime config fields and the changes the build
// made to the filesystem of its base image (so the expectation does not
// depend on the exact bytes of the base, only on what the Dockerfile did).
package conformance

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Entry is one path of a flattened filesystem. Mtimes are not compared:
// BuildKit itself does not make them reproducible.
type Entry struct {
	Type     byte
	Mode     int64
	UID, GID int
	Size     int64
	Sum      string
	Link     string
}

func (e Entry) String() string {
	sum := e.Sum
	if len(sum) > 16 {
		sum = sum[:16]
	}
	return fmt.Sprintf("type=%c mode=%04o uid=%d gid=%d size=%d sum=%s link=%q", e.Type, e.Mode, e.UID, e.GID, e.Size, sum, e.Link)
}

// Paths that differ between any two builders for reasons outside the
// Dockerfile's semantics (mount points, caches, logs) — the same list
// ../shared/conformance/conform.sh gives ocidiff.
var (
	ignore        = regexp.MustCompile(`^/(proc|sys|dev|run/secrets|run)$|^/var/cache/ldconfig/aux-cache$|^/var/log/|^/var/cache/debconf/|^/var/lib/dpkg/.*-old$|^/etc/(hostname|hosts|resolv\.conf)$|^/var/lib/apt/lists|^/tmp$|^/var/cache/apt`)
	contentIgnore = regexp.MustCompile(`^/etc/(shadow|gshadow|shadow-|gshadow-)$|^/var/lib/dpkg/(status|status-old)$`)
)

// Flatten lists every path of img's merged filesystem.
func Flatten(img v1.Image) (map[string]Entry, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]Entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading flattened image: %w", err)
		}
		p := path.Clean("/" + h.Name)
		e := Entry{Type: h.Typeflag, Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid, Link: h.Linkname}
		if e.Type == tar.TypeRegA {
			e.Type = tar.TypeReg
		}
		if e.Type == tar.TypeReg {
			s := sha256.New()
			n, err := io.Copy(s, tr)
			if err != nil {
				return nil, err
			}
			e.Size, e.Sum = n, hex.EncodeToString(s.Sum(nil))
		}
		if e.Type == tar.TypeLink {
			e.Link = path.Clean("/" + h.Linkname)
		}
		if contentIgnore.MatchString(p) {
			e.Size, e.Sum = 0, ""
		}
		out[p] = e
	}
}

// Delta lists, sorted, what result changed relative to base:
// "+ PATH ENTRY" for added or changed paths, "- PATH" for removed ones.
func Delta(base, result map[string]Entry) []string {
	var lines []string
	for p, e := range result {
		if p == "/" || ignore.MatchString(p) {
			continue
		}
		if be, ok := base[p]; !ok || be != e {
			lines = append(lines, "+ "+p+" "+e.String())
		}
	}
	for p := range base {
		if p == "/" || ignore.MatchString(p) {
			continue
		}
		if _, ok := result[p]; !ok {
			lines = append(lines, "- "+p)
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][2:] < lines[j][2:] })
	return lines
}

// Config is the part of an image config that conformance compares, with
// empty values normalised to null as ocidiff does.
func Config(img v1.Image) (string, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	c := cf.Config
	labels := map[string]string{}
	for k, v := range c.Labels {
		if !strings.HasPrefix(k, "org.opencontainers.image.base.") && !strings.HasPrefix(k, "com.docker.") {
			labels[k] = v
		}
	}
	fields := []struct {
		k string
		v any
	}{
		{"os", cf.OS}, {"architecture", cf.Architecture},
		{"Env", c.Env}, {"Cmd", c.Cmd}, {"Entrypoint", c.Entrypoint},
		{"WorkingDir", c.WorkingDir}, {"User", c.User},
		{"ExposedPorts", c.ExposedPorts}, {"Volumes", c.Volumes},
		{"StopSignal", c.StopSignal}, {"Healthcheck", c.Healthcheck},
		{"Shell", c.Shell}, {"OnBuild", c.OnBuild}, {"Labels", labels},
	}
	if cf.Variant != "" {
		// Only when set, so that the expectations of the cases without
		// one keep their lines.
		fields = append(fields[:2:2], append([]struct {
			k string
			v any
		}{{"variant", cf.Variant}}, fields[2:]...)...)
	}
	var sb strings.Builder
	for _, f := range fields {
		j, _ := json.Marshal(f.v)
		switch string(j) {
		case "[]", "{}", `""`:
			j = []byte("null")
		}
		fmt.Fprintf(&sb, "%s: %s\n", f.k, j)
	}
	return sb.String(), nil
}
