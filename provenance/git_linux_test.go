package provenance

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writeTree writes files (path → content) under dir; a content starting
// with "->" makes a symlink to the rest.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadGit(t *testing.T) {
	c1 := strings.Repeat("a1", 20)
	c2 := strings.Repeat("b2", 20)
	config := "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://ci:tok@example.com/team/app.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n" +
		"[remote \"fork\"]\n\turl = git@example.com:me/app.git\n[branch \"topic\"]\n\tremote = fork\n"
	tests := []struct {
		name  string
		files map[string]string
		ctx   string // the context, relative to the temporary directory
		want  *Git
	}{
		{
			name:  "loose ref",
			files: map[string]string{".git/HEAD": "ref: refs/heads/main\n", ".git/refs/heads/main": c1 + "\n", ".git/config": config, "app/Dockerfile": ""},
			ctx:   "app", // a subdirectory of the checkout, as git finds it
			want:  &Git{Commit: c1, Ref: "refs/heads/main", Remote: "https://example.com/team/app.git"},
		},
		{
			name:  "packed ref, branch remote",
			files: map[string]string{".git/HEAD": "ref: refs/heads/topic\n", ".git/packed-refs": "# pack-refs with: peeled fully-peeled sorted\n" + c2 + " refs/heads/topic\n^" + c1 + "\n", ".git/config": config},
			want:  &Git{Commit: c2, Ref: "refs/heads/topic", Remote: "example.com:me/app.git"},
		},
		{
			name:  "detached HEAD, no remote",
			files: map[string]string{".git/HEAD": c1 + "\n"},
			want:  &Git{Commit: c1},
		},
		{
			name: "linked worktree",
			files: map[string]string{
				"main/.git/HEAD": "ref: refs/heads/main\n", "main/.git/refs/heads/main": c1, "main/.git/refs/heads/wt": c2, "main/.git/config": config,
				"main/.git/worktrees/wt/HEAD": "ref: refs/heads/wt\n", "main/.git/worktrees/wt/commondir": "../..\n",
				"wt/.git": "gitdir: ../main/.git/worktrees/wt\n",
			},
			ctx:  "wt",
			want: &Git{Commit: c2, Ref: "refs/heads/wt", Remote: "https://example.com/team/app.git"},
		},
		{
			name:  "unborn branch",
			files: map[string]string{".git/HEAD": "ref: refs/heads/main\n"},
			want:  nil,
		},
		{
			name:  "no checkout",
			files: map[string]string{"Dockerfile": ""},
			want:  nil,
		},
		{
			// A hostile context: the ref is a symlink out of .git. It
			// resolves inside the git directory, where nothing is.
			name:  "symlinked ref stays inside",
			files: map[string]string{".git/HEAD": "ref: refs/heads/main\n", ".git/refs/heads/main": "->/etc/hostname"},
			want:  nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			got, err := ReadGit(filepath.Join(dir, tt.ctx))
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case got == nil && tt.want == nil:
			case got == nil || tt.want == nil || *got != *tt.want:
				t.Errorf("ReadGit = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestReadGitRefusesFIFO: a FIFO planted as HEAD must not hang the build.
func TestReadGitRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, ".git", "HEAD"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadGit(dir); err == nil {
		t.Error("a FIFO HEAD was read")
	}
}
