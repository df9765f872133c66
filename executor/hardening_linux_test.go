package executor

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRunHardening(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	// A hostile image: /proc and /dev are symlinks (one leaving the
	// root), /sys a symlink into /tmp.
	hostile := t.TempDir()
	must(t, os.Symlink("../../../../../../tmp/kiln-hostile-proc", filepath.Join(hostile, "proc")))
	must(t, os.Symlink("/etc", filepath.Join(hostile, "dev")))
	must(t, os.Symlink("var/sys", filepath.Join(hostile, "sys")))
	rootProc := t.TempDir()
	must(t, os.Symlink("/", filepath.Join(rootProc, "proc")))

	// The checks print one line each; paths this kernel lacks are left
	// out of the expectation.
	probe := ""
	want := ""
	for _, p := range maskedPaths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			probe += "echo " + p + " $(ls -A " + p + " | wc -l)\n"
		} else {
			probe += "echo " + p + " $(wc -c < " + p + ")\n"
		}
		want += p + " 0\n"
	}
	for _, p := range readonlyPaths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		// The mount's options, wherever the image made /proc point.
		probe += "echo " + p + " $(awk -v p=$(readlink -f /proc)" + strings.TrimPrefix(p, "/proc") + " '$5==p{print $6}' /proc/self/mountinfo | cut -d, -f1)\n"
		want += p + " ro\n"
	}
	probe += "grep CapBnd /proc/self/status\nstat -c '%t:%T' /dev/null\n"
	want += "CapBnd:\t00000000a80425fb\n1:3\n"
	tests := []struct {
		name     string
		lowers   []string
		security string
		allow    bool
		want     string
		wantErr  string
	}{
		{
			name: "default",
			want: want,
		},
		{
			name:   "symlinked proc, dev and sys",
			lowers: []string{hostile},
			want:   want,
		},
		{
			name:    "proc as a symlink to the root",
			lowers:  []string{rootProc},
			wantErr: "mount point /proc resolves to the root of the image",
		},
		{
			name:     "insecure needs the entitlement",
			security: "insecure",
			wantErr:  "RUN --security=insecure needs --allow security.insecure",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rootfs := newRootfs(t, append(tt.lowers, base)...)
			var out, errOut bytes.Buffer
			spec := RunSpec{
				Rootfs: rootfs, Env: []string{testPath}, Args: []string{"/bin/sh", "-c", probe},
				Security: tt.security, Stdout: &out, Stderr: &errOut,
			}
			if tt.allow {
				spec.Sandbox.Allow = []string{EntitlementInsecure}
			}
			err := Run(context.Background(), spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v; stderr %q", err, errOut.String())
			}
			if out.String() != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s\nstderr %q", out.String(), tt.want, errOut.String())
			}
			if _, err := os.Lstat("/tmp/kiln-hostile-proc"); err == nil {
				t.Error("a mount point was created on the host")
			}
			if e := upperEntries(t, rootfs.Upper); len(e) != 0 {
				t.Errorf("upper dir holds %v", e)
			}
			assertStepGone(t, rootfs.Upper)
		})
	}
}

func TestRunInsecure(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	var out, errOut bytes.Buffer
	err := Run(context.Background(), RunSpec{
		Rootfs: newRootfs(t, base), Env: []string{testPath},
		Args:     []string{"/bin/sh", "-c", "grep -E '^(CapBnd|Seccomp):' /proc/self/status; wc -c < /proc/keys | grep -qv '^0$' && echo keys-visible; mkdir /mnt; mount -t tmpfs none /mnt && echo mounted"},
		Security: "insecure", Sandbox: Sandbox{Allow: []string{EntitlementInsecure}},
		Stdout: &out, Stderr: &errOut,
	})
	if err != nil {
		t.Fatalf("%v; stderr %q", err, errOut.String())
	}
	if !strings.Contains(out.String(), "Seccomp:\t0\n") || strings.Contains(out.String(), "a80425fb") || !strings.Contains(out.String(), "mounted") {
		t.Errorf("insecure step still hardened:\n%s\nstderr %q", out.String(), errOut.String())
	}
}

// TestRunWorkdirInProcFd checks that no fd of the sandbox init leads out
// of the root: WORKDIR /proc/self/fd/N fails or stays inside.
func TestRunWorkdirInProcFd(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	for n := 3; n < 12; n++ {
		cwd := "/proc/self/fd/" + strconv.Itoa(n)
		var out, errOut bytes.Buffer
		err := Run(context.Background(), RunSpec{
			Rootfs: newRootfs(t, base), Env: []string{testPath}, Cwd: cwd,
			Args: []string{"/bin/sh", "-c", "pwd -P; ls"}, Stdout: &out, Stderr: &errOut,
		})
		if err == nil {
			t.Errorf("WORKDIR %s: ran in %q", cwd, out.String())
		} else if !strings.Contains(err.Error(), "working directory") {
			t.Errorf("WORKDIR %s: %v", cwd, err)
		}
	}
}
