package conformance

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Case is the metadata of one case folder, in conform.sh's format:
// Dockerfile + context, optional build-args (K=V lines), target, and
// prepare.sh (run in the copied context first), plus kiln's own:
// base (the image the fs expectation is relative to; default busybox) and
// error (the case must fail; the file holds a substring of kiln's error).
type Case struct {
	BuildArgs   []string
	Secrets     []string // buildx --secret values, $CASE replaced by the case folder
	Target      string
	Base        string
	ExpectError string
	// Loose: file sizes and digests are not compared (a case whose content
	// comes from a moving package archive).
	Loose bool
	// Platforms, from the platforms file (comma-separated), are built and
	// compared one at a time, each against its own expectations
	// (ExpectedDir); none means one build for the default platform.
	Platforms []string
}

// ExpectedDir is where a case's expectations for platform p are:
// expected/, or expected/linux_arm64/ … for a case with a platforms file.
func ExpectedDir(caseDir, p string) string {
	if p == "" {
		return filepath.Join(caseDir, "expected")
	}
	return filepath.Join(caseDir, "expected", strings.ReplaceAll(p, "/", "_"))
}

// DefaultBase is the image most cases build on.
const DefaultBase = "127.0.0.1:5000/library/busybox:latest"

// ReadCase reads a case's metadata files.
func ReadCase(dir string) (Case, error) {
	c := Case{Base: DefaultBase}
	lines := func(name string) ([]string, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		var out []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimRight(sc.Text(), "\r"); l != "" {
				out = append(out, l)
			}
		}
		return out, sc.Err()
	}
	var err error
	if c.BuildArgs, err = lines("build-args"); err != nil {
		return c, err
	}
	if c.Secrets, err = lines("secrets"); err != nil {
		return c, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return c, err
	}
	for i, s := range c.Secrets {
		c.Secrets[i] = strings.ReplaceAll(s, "$CASE", abs)
	}
	for name, dst := range map[string]*string{"target": &c.Target, "base": &c.Base, "error": &c.ExpectError} {
		l, err := lines(name)
		if err != nil {
			return c, err
		}
		if len(l) > 0 {
			*dst = l[0]
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "loose")); err == nil {
		c.Loose = true
	}
	pl, err := lines("platforms")
	if err != nil {
		return c, err
	}
	for _, l := range pl {
		for _, p := range strings.Split(l, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.Platforms = append(c.Platforms, p)
			}
		}
	}
	return c, nil
}

// StripContent removes sizes and digests from Delta lines, for loose cases.
func StripContent(lines string) string {
	return sizeSum.ReplaceAllString(lines, "")
}

var sizeSum = regexp.MustCompile(` size=\d+ sum=[0-9a-f]*`)

// metaFiles are a case's own files, not part of its build context.
var metaFiles = []string{"build-args", "target", "secrets", "base", "error", "loose", "platforms", "prepare.sh", "expected"}

// PrepareContext copies a case into dst (which must not exist) without its
// metadata, and runs its prepare.sh there.
func PrepareContext(caseDir, dst string) error {
	if out, err := exec.Command("cp", "-a", caseDir, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copying case: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dst, "prepare.sh")); err == nil {
		cmd := exec.Command("sh", "prepare.sh")
		cmd.Dir = dst
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("prepare.sh: %v: %s", err, out)
		}
	}
	for _, m := range metaFiles {
		if err := os.RemoveAll(filepath.Join(dst, m)); err != nil {
			return err
		}
	}
	return nil
}

// DeltaOf is Delta between two images.
func DeltaOf(base, result v1.Image) ([]string, error) {
	b, err := Flatten(base)
	if err != nil {
		return nil, fmt.Errorf("flattening base: %w", err)
	}
	r, err := Flatten(result)
	if err != nil {
		return nil, fmt.Errorf("flattening result: %w", err)
	}
	return Delta(b, r), nil
}
