package source

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

func TestGit(t *testing.T) {
	repo := testutil.NewGitRepo(t)
	servers := map[string]string{
		"daemon":     testutil.GitDaemon(t, repo.Base) + "/repo.git",
		"smart-http": testutil.GitHTTP(t, repo.Base) + "/repo.git",
	}
	tests := []struct {
		name       string
		fragment   string
		checksum   string
		keep       bool
		wantCommit string
		wantFiles  map[string]string // path under the subdir → content ("" = must not exist)
		wantErr    string
	}{
		{name: "tag with subdir", fragment: "#v1:sub", wantCommit: "v1", wantFiles: map[string]string{"a.txt": "a1\n", "b.txt": "", ".git": ""}},
		{name: "head", fragment: "", wantCommit: "main", wantFiles: map[string]string{"README": "one\n", "sub/a.txt": "a2\n", "sub/b.txt": "b\n"}},
		{name: "branch", fragment: "#main:sub", wantCommit: "main", wantFiles: map[string]string{"b.txt": "b\n"}},
		{name: "commit", fragment: "#" + repo.V1, wantCommit: "v1", wantFiles: map[string]string{"sub/a.txt": "a1\n"}},
		{name: "keep git dir", fragment: "#v1", keep: true, wantCommit: "v1", wantFiles: map[string]string{"README": "one\n"}},
		{name: "checksum ok", fragment: "#v1", checksum: repo.V1[:12], wantCommit: "v1"},
		{name: "checksum mismatch", fragment: "#v1", checksum: repo.Main, wantErr: "expected checksum to match"},
		{name: "missing ref", fragment: "#nope", wantErr: `no ref "nope"`},
	}
	for srvName, remote := range servers {
		for _, tt := range tests {
			t.Run(srvName+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				g, ok, err := ParseGit(remote + tt.fragment)
				if !ok || err != nil {
					t.Fatalf("ParseGit: %v %v", ok, err)
				}
				res, err := ResolveGit(ctx, g, tt.checksum)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("err = %v, want %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				want := map[string]string{"v1": repo.V1, "main": repo.Main}[tt.wantCommit]
				if res.Commit != want {
					t.Fatalf("commit = %s, want %s", res.Commit, want)
				}
				dir := filepath.Join(t.TempDir(), "co")
				if err := Git(ctx, g, res, dir, tt.keep); err != nil {
					t.Fatal(err)
				}
				root, err := SubdirPath(dir, g.Subdir)
				if err != nil {
					t.Fatal(err)
				}
				for p, content := range tt.wantFiles {
					b, err := os.ReadFile(filepath.Join(root, p))
					if content == "" {
						if err == nil || !os.IsNotExist(err) {
							if fi, serr := os.Stat(filepath.Join(root, p)); serr == nil {
								t.Errorf("%s exists (%v), want it absent", p, fi.Mode())
							}
						}
						continue
					}
					if err != nil || string(b) != content {
						t.Errorf("%s = %q, %v; want %q", p, b, err, content)
					}
				}
				_, err = os.Stat(filepath.Join(dir, ".git"))
				if tt.keep != (err == nil) {
					t.Errorf(".git present = %v, want %v", err == nil, tt.keep)
				}
				if tt.keep {
					head := testutil.Git(t, dir, "rev-parse", "HEAD")
					if head != res.Commit {
						t.Errorf("kept .git's HEAD = %s, want %s", head, res.Commit)
					}
				}
			})
		}
	}
}

func TestSubdirPathContained(t *testing.T) {
	root := t.TempDir()
	canary := testutil.NewCanary(t)
	if err := os.Symlink(canary.Dir, filepath.Join(root, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary.Rel(), filepath.Join(root, "rel")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "real", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"out", "rel", "out/x", "../../" + canary.Dir} {
		if p, err := SubdirPath(root, sub); err == nil {
			t.Errorf("SubdirPath(%q) = %s, want a refusal (symlink or missing)", sub, p)
		}
	}
	if p, err := SubdirPath(root, "../real/./dir/"); err != nil || p != filepath.Join(root, "real", "dir") {
		t.Errorf("SubdirPath of a real directory = %s, %v", p, err)
	}
	canary.Check(t)
}

func TestGitSubmodules(t *testing.T) {
	repo := testutil.NewGitRepo(t)
	repo.AddSuperproject(t)
	for name, base := range map[string]string{"daemon": testutil.GitDaemon(t, repo.Base), "smart-http": testutil.GitHTTP(t, repo.Base)} {
		t.Run(name, func(t *testing.T) {
			g, _, err := ParseGit(base + "/super.git#main")
			if err != nil {
				t.Fatal(err)
			}
			res, err := ResolveGit(context.Background(), g, "")
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "co")
			if err := Git(context.Background(), g, res, dir, false); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "mod", "sub", "b.txt"))
			if err != nil || string(b) != "b\n" {
				t.Errorf("mod/sub/b.txt = %q, %v: the submodule was not checked out", b, err)
			}
		})
	}
}
