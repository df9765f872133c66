package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// TestVersionStamped builds kiln with the link flags of `make build` and
// checks that `kiln version` shows the tree's commit and a version, not
// "(devel)" and "unknown".
func TestVersionStamped(t *testing.T) {
	for _, tool := range []string{"make", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipHostf(t, "needs %s (Debian package %s)", tool, tool)
		}
	}
	top, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	head, err := exec.Command("git", "-C", top, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): make build stamps nothing", err)
	}
	cmd := exec.Command("make", "-s", "--no-print-directory", "print-ldflags")
	cmd.Dir = top
	ldflags, err := cmd.Output()
	if err != nil {
		t.Fatalf("make print-ldflags: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "kiln")
	build := exec.Command("go", "build", "-ldflags", strings.TrimSpace(string(ldflags)), "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags %s: %v\n%s", ldflags, err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("kiln version: %v", err)
	}
	var v versionInfo
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("kiln version --json: %v\n%s", err, out)
	}
	if want := strings.TrimSpace(string(head)); v.GitCommit != want {
		t.Errorf("git commit %q, want %q", v.GitCommit, want)
	}
	if v.Version == "" || v.Version == "(devel)" {
		t.Errorf("version %q, want git describe's", v.Version)
	}
	// git describe: a tag, or the abbreviated commit when there is none.
	if len(v.GitCommit) >= 7 && !strings.Contains(v.Version, v.GitCommit[:7]) && !strings.HasPrefix(v.Version, "v") {
		t.Errorf("version %q names neither a tag nor commit %s", v.Version, v.GitCommit)
	}
}
