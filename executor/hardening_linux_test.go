package executor

import (
	"bytes"
	"context"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/cgroups"
	"github.com/kiln-build/kiln/executor/stepinit"
	"github.com/kiln-build/kiln/internal/userns"
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
	for _, p := range stepinit.MaskedPaths {
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
	for _, p := range stepinit.ReadonlyPaths {
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

// deviceProbe prints, for each path, whether the step can open it, then
// whether it can make a device node (one the allow-list lets it open, so
// that a failing guard reads no host device), and whether /dev/null still
// works.
func deviceProbe(paths ...string) string {
	s := ""
	for _, p := range paths {
		s += "(exec 3<" + p + ") 2>/dev/null && echo " + p + " opened || echo " + p + " refused\n"
	}
	s += "mknod /tmp/node c 1 7 2>/dev/null && echo mknod ok || echo mknod refused\n"
	s += "echo x > /dev/null && head -c 2 /dev/zero | wc -c\n"
	s += "grep CapBnd /proc/self/status\n"
	return s
}

// TestRunFailsClosed checks each guard the host may lack (simulated with
// the test knob hostLacksEnv): the step refuses with a message naming the
// entitlement, or runs with an equivalent guard, never with less.
func TestRunFailsClosed(t *testing.T) {
	needRoot(t)
	if userns.Running() {
		t.Skip("in a user namespace the kernel guards devices itself; see TestNodevFallback")
	}
	base := busyboxRootfs(t)
	// An image layer, and a host directory bound into the step, each with
	// a device node the allow-list would let the step open: nothing but
	// nodev keeps the step from opening it.
	image := t.TempDir()
	must(t, os.Mkdir(filepath.Join(image, "img"), 0o755))
	must(t, unix.Mknod(filepath.Join(image, "img/full"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 7))))
	hostDir := t.TempDir()
	must(t, unix.Mknod(filepath.Join(hostDir, "full"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 7))))
	// A host directory bound over the sandbox's own /dev/pts: a mount
	// stacked on a point of /dev is the step's, not kiln's.
	mounts := []Mount{
		{Type: "bind", Source: hostDir, Target: "/host"},
		{Type: "tmpfs", Target: "/scratch"},
		{Type: "bind", Source: hostDir, Target: "/dev/pts"},
	}
	probe := deviceProbe("/img/full", "/host/full", "/dev/pts/full", "/dev/full")
	// CAP_MKNOD (bit 27) dropped from Docker's default set.
	noMknod := "/img/full refused\n/host/full refused\n/dev/pts/full refused\n/dev/full opened\nmknod refused\n2\nCapBnd:\t00000000a00425fb\n"
	withFilter := "/img/full opened\n/host/full opened\n/dev/pts/full opened\n/dev/full opened\nmknod ok\n2\nCapBnd:\t00000000a80425fb\n"
	_, cgErr := cgroups.Host()

	tests := []struct {
		name      string
		lacks     string
		allow     []string
		needCg    bool
		args      []string
		want      string
		wantErr   []string
		wantNoErr bool
	}{
		{
			name:   "with a device filter, the allow-list decides",
			needCg: true,
			args:   []string{"/bin/sh", "-c", probe},
			want:   withFilter,
		},
		{
			name:    "no cgroup: refused",
			lacks:   "cgroup",
			args:    []string{"/bin/true"},
			wantErr: []string{"need a cgroup", "--allow security.nocgroup", "Delegate=yes"},
		},
		{
			name:  "no cgroup, allowed: CAP_MKNOD dropped, root nodev",
			lacks: "cgroup",
			allow: []string{EntitlementNoCgroup},
			args:  []string{"/bin/sh", "-c", probe},
			want:  noMknod,
		},
		{
			name:   "no device filter: CAP_MKNOD dropped, root nodev",
			lacks:  "devicefilter",
			needCg: true,
			args:   []string{"/bin/sh", "-c", probe},
			want:   noMknod,
		},
		{
			name:    "no seccomp table: refused",
			lacks:   "seccomp",
			args:    []string{"/bin/true"},
			wantErr: []string{"seccomp", "--allow security.noseccomp"},
		},
		{
			name:  "no seccomp table, allowed: no filter",
			lacks: "seccomp",
			allow: []string{EntitlementNoSeccomp},
			args:  []string{"/bin/sh", "-c", "grep Seccomp: /proc/self/status"},
			want:  "Seccomp:\t0\n",
		},
		{
			name:    "all missing, one allowed: still refused",
			lacks:   "cgroup,seccomp",
			allow:   []string{EntitlementNoCgroup},
			args:    []string{"/bin/true"},
			wantErr: []string{"--allow security.noseccomp"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needCg && cgErr != nil {
				testutil.SkipHostf(t, "needs cgroups: %v", cgErr)
			}
			t.Setenv(hostLacksEnv, tt.lacks)
			rootfs := newRootfs(t, image, base)
			var out, errOut bytes.Buffer
			err := Run(context.Background(), RunSpec{
				Rootfs: rootfs, Env: []string{testPath}, Args: tt.args, Mounts: mounts,
				Sandbox: Sandbox{Allow: tt.allow}, Stdout: &out, Stderr: &errOut,
			})
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ran: %q", out.String())
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("%v; stderr %q", err, errOut.String())
			}
			if out.String() != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s\nstderr %q", out.String(), tt.want, errOut.String())
			}
			if _, err := os.Stat(filepath.Join(hostDir, "node")); err == nil {
				t.Error("a node was made on the host")
			}
			assertStepGone(t, rootfs.Upper)
		})
	}
}

func TestNodevFallback(t *testing.T) {
	tests := []struct {
		name                         string
		insecure, inUserNS, filtered bool
		want                         bool
	}{
		{"device filter in place", false, false, true, false},
		{"no filter, real root: CAP_MKNOD dropped, root nodev", false, false, false, true},
		{"no filter, user namespace: the kernel refuses device nodes", false, true, false, false},
		{"insecure: every device, as a privileged container", true, false, false, false},
	}
	for _, tt := range tests {
		if got := nodevFallback(tt.insecure, tt.inUserNS, tt.filtered); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
