package executor

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunMounts(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	// An image whose /cache is a symlink leaving the root: the bind must
	// land inside the image, never on the host's /elsewhere.
	evil := t.TempDir()
	must(t, os.Symlink("../../../../elsewhere/cache", filepath.Join(evil, "cache")))
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }

	tests := []struct {
		name   string
		lowers []string
		mounts func(t *testing.T, host string) []Mount
		script string
		want   string
		check  func(t *testing.T, host string, upper []string)
	}{
		{
			name: "bind dir is writable and writes land in the source",
			mounts: func(t *testing.T, host string) []Mount {
				return []Mount{{Type: "bind", Source: host, Target: "/deep/cache"}}
			},
			script: "cat /deep/cache/seed && echo new > /deep/cache/new",
			want:   "seed\n",
			check: func(t *testing.T, host string, upper []string) {
				b, err := os.ReadFile(filepath.Join(host, "new"))
				if err != nil || string(b) != "new\n" {
					t.Errorf("source/new = %q, %v", b, err)
				}
				if len(upper) != 0 {
					t.Errorf("upper dir holds %v; the mount point and the write belong elsewhere", upper)
				}
			},
		},
		{
			name: "read-only bind",
			mounts: func(t *testing.T, host string) []Mount {
				return []Mount{{Type: "bind", Source: host, Target: "/ro", Readonly: true}}
			},
			script: "cat /ro/seed; touch /ro/x 2>/dev/null || echo refused",
			want:   "seed\nrefused\n",
			check: func(t *testing.T, host string, upper []string) {
				if _, err := os.Stat(filepath.Join(host, "x")); err == nil {
					t.Error("write through a read-only bind reached the source")
				}
			},
		},
		{
			name: "bind file over an existing file",
			mounts: func(t *testing.T, host string) []Mount {
				return []Mount{{Type: "bind", Source: filepath.Join(host, "seed"), Target: "/data/file", Readonly: true}}
			},
			script: "cat /data/file",
			want:   "seed\n",
			check: func(t *testing.T, host string, upper []string) {
				if len(upper) != 0 {
					t.Errorf("upper dir holds %v", upper)
				}
			},
		},
		{
			name: "tmpfs",
			mounts: func(t *testing.T, host string) []Mount {
				return []Mount{{Type: "tmpfs", Target: "/data/tmp"}}
			},
			script: "echo x > /data/tmp/f && grep -c ' /data/tmp tmpfs' /proc/mounts",
			want:   "1\n",
			check: func(t *testing.T, host string, upper []string) {
				if len(upper) != 0 {
					t.Errorf("upper dir holds %v; tmpfs writes leaked", upper)
				}
			},
		},
		{
			name: "tmpfs with a size",
			mounts: func(t *testing.T, host string) []Mount {
				return []Mount{{Type: "tmpfs", Target: "/small", Size: 1 << 20}}
			},
			script: "head -c 2000000 /dev/zero > /small/f 2>/dev/null || echo full; df -k /small | tail -1 | awk '{print $2}'",
			want:   "full\n1024\n",
			check:  func(t *testing.T, host string, upper []string) {},
		},
		{
			name: "nested mounts and one below /dev",
			mounts: func(t *testing.T, host string) []Mount {
				return []Mount{
					{Type: "tmpfs", Target: "/t"},
					{Type: "bind", Source: host, Target: "/t/sub/cache"},
					{Type: "bind", Source: filepath.Join(host, "seed"), Target: "/dev/seed"},
				}
			},
			script: "cat /t/sub/cache/seed /dev/seed",
			want:   "seed\nseed\n",
			check: func(t *testing.T, host string, upper []string) {
				if len(upper) != 0 {
					t.Errorf("upper dir holds %v", upper)
				}
			},
		},
		{
			name:   "symlinked target stays inside the root",
			lowers: []string{evil},
			mounts: func(t *testing.T, host string) []Mount {
				return []Mount{{Type: "bind", Source: host, Target: "/cache"}}
			},
			script: "cat /elsewhere/cache/seed",
			want:   "seed\n",
			check: func(t *testing.T, host string, upper []string) {
				if _, err := os.Lstat("/elsewhere"); err == nil {
					t.Error("mount point created on the host")
				}
				if len(upper) != 0 {
					t.Errorf("upper dir holds %v", upper)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			must(t, os.WriteFile(filepath.Join(host, "seed"), []byte("seed\n"), 0o644))
			rootfs := newRootfs(t, append(tt.lowers, base)...)
			var out, errOut bytes.Buffer
			err := Run(context.Background(), RunSpec{
				Rootfs: rootfs, Env: []string{testPath}, Args: sh(tt.script),
				Mounts: tt.mounts(t, host), Stdout: &out, Stderr: &errOut,
			})
			if err != nil {
				t.Fatalf("%v; stderr %q", err, errOut.String())
			}
			if out.String() != tt.want {
				t.Errorf("output %q, want %q; stderr %q", out.String(), tt.want, errOut.String())
			}
			tt.check(t, host, upperEntries(t, rootfs.Upper))
			assertStepGone(t, rootfs.Upper)
		})
	}
}

func TestRunMountErrors(t *testing.T) {
	tests := []struct {
		name  string
		mount Mount
		want  string
	}{
		{"relative target", Mount{Type: "tmpfs", Target: "x"}, "must be absolute"},
		{"root target", Mount{Type: "tmpfs", Target: "/"}, "must be absolute and below /"},
		{"relative source", Mount{Type: "bind", Source: "src", Target: "/x"}, "absolute host path"},
		{"unknown type", Mount{Type: "cache", Target: "/x"}, "unknown type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), RunSpec{Args: []string{"/bin/true"}, Mounts: []Mount{tt.mount}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
