package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/internal/testutil"
)

func TestMain(m *testing.M) {
	// The sandbox re-executes the test binary: it must become the child
	// before the testing package looks at the arguments.
	Init()
	os.Exit(m.Run())
}

// needRoot skips tests that mount and create namespaces.
func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipHost(tb, "needs root: mounts and namespaces")
	}
}

const testPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// busyboxRootfs builds a minimal image in a directory: a static busybox
// with its applets, /etc/passwd and /etc/group, some data to delete. It has
// no /proc, /dev, /sys, /etc/hosts or /etc/resolv.conf, so every mount
// point of a RUN is a stub.
func busyboxRootfs(tb testing.TB) string {
	tb.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		testutil.SkipHost(tb, "needs busybox (apt-get install busybox-static)")
	}
	if out, err := exec.Command("file", "-L", bb).Output(); err == nil && !bytes.Contains(out, []byte("statically linked")) {
		testutil.SkipHost(tb, "needs a static busybox (apt-get install busybox-static)")
	}
	root := tb.TempDir()
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nstaff:x:50:nobody\nusers:x:100:root,nobody\nnogroup:x:65534:\n",
		"data/file":  "lower\n",
		"data/dir/a": "a\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		must(tb, os.MkdirAll(filepath.Dir(p), 0o755))
		must(tb, os.WriteFile(p, []byte(content), 0o644))
	}
	must(tb, os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	must(tb, os.Mkdir(filepath.Join(root, "tmp"), 0o777))
	must(tb, os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	data, err := os.ReadFile(bb)
	must(tb, err)
	must(tb, os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755))
	list, err := exec.Command(bb, "--list").Output()
	must(tb, err)
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			must(tb, os.Symlink("busybox", filepath.Join(root, "bin", applet)))
		}
	}
	return root
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// newRootfs gives fresh Upper and Work dirs over lowers.
func newRootfs(tb testing.TB, lowers ...string) Rootfs {
	tb.Helper()
	dir := tb.TempDir()
	r := Rootfs{Lowers: lowers, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}
	must(tb, os.Mkdir(r.Upper, 0o755))
	must(tb, os.Mkdir(r.Work, 0o755))
	return r
}

// upperEntries lists the upper dir, "path type" per entry, type being
// f(ile), d(ir), l(ink), c(har device) or o(ther).
func upperEntries(tb testing.TB, upper string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == upper {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		typ := "o"
		switch t := d.Type(); {
		case t.IsRegular():
			typ = "f"
		case t.IsDir():
			typ = "d"
		case t&fs.ModeSymlink != 0:
			typ = "l"
		case t&fs.ModeCharDevice != 0:
			typ = "c"
		}
		out = append(out, rel+" "+typ)
		return nil
	})
	must(tb, err)
	return out
}

type runResult struct {
	out    string
	err    error
	rootfs Rootfs
}

func TestRun(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	// A second layer with the usual mount point directories, so that the
	// two-lower view and existing mount targets are covered too.
	top := t.TempDir()
	for _, d := range []string{"proc", "dev", "sys"} {
		must(t, os.Mkdir(filepath.Join(top, d), 0o555))
	}
	must(t, os.WriteFile(filepath.Join(top, "top-file"), nil, 0o644))
	// An image whose resolv.conf is a symlink leaving the root: the mount
	// must land inside the image.
	evil := t.TempDir()
	must(t, os.Mkdir(filepath.Join(evil, "etc"), 0o755))
	must(t, os.Symlink("../../../../../elsewhere/resolv.conf", filepath.Join(evil, "etc/resolv.conf")))
	_, hostResolv := os.Stat("/etc/resolv.conf")
	fifo := t.TempDir()
	must(t, os.Mkdir(filepath.Join(fifo, "etc"), 0o755))
	must(t, unix.Mkfifo(filepath.Join(fifo, "etc/passwd"), 0o644))

	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	tests := []struct {
		name   string
		lowers []string
		spec   RunSpec
		check  func(t *testing.T, r runResult)
	}{
		{
			name: "no-op leaves an empty upper",
			spec: RunSpec{Args: []string{"/bin/true"}},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if e := upperEntries(t, r.rootfs.Upper); len(e) != 0 {
					t.Errorf("upper dir not empty after /bin/true: %v", e)
				}
			},
		},
		{
			name: "write lands in upper",
			spec: RunSpec{Args: sh("echo hello > /out")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				b, err := os.ReadFile(filepath.Join(r.rootfs.Upper, "out"))
				must(t, err)
				if string(b) != "hello\n" {
					t.Errorf("upper/out = %q", b)
				}
				if e := upperEntries(t, r.rootfs.Upper); len(e) != 1 {
					t.Errorf("upper dir holds more than the new file: %v", e)
				}
			},
		},
		{
			name: "overlay is volatile when the kernel allows",
			spec: RunSpec{Args: sh("grep ' / / ' /proc/self/mountinfo")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if !strings.Contains(r.out, " - overlay ") {
					t.Fatalf("root is not an overlay: %q", r.out)
				}
				if volatileUnsupported.Load() {
					t.Log("kernel refuses volatile")
				} else if !strings.Contains(r.out, "volatile") {
					// Shown as "volatile", or "fsync=volatile" since 6.x.
					t.Errorf("root overlay not volatile: %q", r.out)
				}
			},
		},
		{
			name: "removed lower file is a whiteout",
			spec: RunSpec{Args: sh("rm /data/file")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				var st unix.Stat_t
				must(t, unix.Lstat(filepath.Join(r.rootfs.Upper, "data/file"), &st))
				if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
					t.Errorf("upper/data/file mode %o rdev %d, want a 0:0 char device", st.Mode, st.Rdev)
				}
			},
		},
		{
			name: "recreated dir is opaque",
			spec: RunSpec{Args: sh("rm -rf /data/dir && mkdir /data/dir")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				buf := make([]byte, 8)
				n, err := unix.Lgetxattr(filepath.Join(r.rootfs.Upper, "data/dir"), "trusted.overlay.opaque", buf)
				must(t, err)
				if string(buf[:n]) != "y" {
					t.Errorf("trusted.overlay.opaque = %q, want y", buf[:n])
				}
			},
		},
		{
			name: "exit code",
			spec: RunSpec{Args: sh("exit 3")},
			check: func(t *testing.T, r runResult) {
				var ee *ExitError
				if !errors.As(r.err, &ee) || ee.Code != 3 || ee.Signal != "" {
					t.Fatalf("err = %v, want *ExitError{Code: 3}", r.err)
				}
				if r.err.Error() != "exit code 3" {
					t.Errorf("message %q", r.err)
				}
			},
		},
		{
			name: "killed by signal",
			spec: RunSpec{Args: sh("kill -9 $$")},
			check: func(t *testing.T, r runResult) {
				var ee *ExitError
				if !errors.As(r.err, &ee) || ee.Code != 137 || ee.Signal != "KILL" {
					t.Fatalf("err = %#v, want *ExitError{Code: 137, Signal: KILL}", r.err)
				}
				if r.err.Error() != "killed by signal KILL" {
					t.Errorf("message %q", r.err)
				}
			},
		},
		{
			name: "command not found",
			spec: RunSpec{Args: []string{"no-such-command"}},
			check: func(t *testing.T, r runResult) {
				var ee *ExitError
				if !errors.As(r.err, &ee) || ee.Code != 127 {
					t.Fatalf("err = %v, want *ExitError{Code: 127}", r.err)
				}
				if want := `exec: "no-such-command": executable file not found in $PATH`; ee.Reason != want {
					t.Errorf("reason %q, want %q", ee.Reason, want)
				}
			},
		},
		{
			name: "root by default",
			spec: RunSpec{Args: sh("id -u; id -g; id -G")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				// root is listed in "users": BuildKit adds it for root too.
				if r.out != "0\n0\n0 100\n" {
					t.Errorf("id = %q", r.out)
				}
			},
		},
		{
			name: "user by name gets supplementary groups",
			spec: RunSpec{User: "nobody", Args: sh("id -u; id -g; id -G")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "65534\n65534\n65534 50 100\n" {
					t.Errorf("id = %q", r.out)
				}
			},
		},
		{
			name: "an unprivileged user can use the sandbox's files",
			spec: RunSpec{User: "nobody", Args: sh("cat /etc/hosts /etc/passwd >/dev/null && (test ! -e /etc/resolv.conf || cat /etc/resolv.conf >/dev/null) && ls /proc/self/fd >/dev/null && echo x > /tmp/f && echo ok")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "ok\n" {
					t.Errorf("output %q", r.out)
				}
			},
		},
		{
			name: "explicit group replaces supplementary groups",
			spec: RunSpec{User: "nobody:staff", Args: sh("id -u; id -g; id -G")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "65534\n50\n50\n" {
					t.Errorf("id = %q", r.out)
				}
			},
		},
		{
			name: "numeric uid without passwd entry",
			spec: RunSpec{User: "1234", Args: sh("id -u; id -g")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "1234\n0\n" {
					t.Errorf("id = %q", r.out)
				}
			},
		},
		{
			name: "unknown user",
			spec: RunSpec{User: "ghost", Args: []string{"/bin/true"}},
			check: func(t *testing.T, r runResult) {
				if r.err == nil || r.err.Error() != "unable to find user ghost: no matching entries in passwd file" {
					t.Errorf("err = %v", r.err)
				}
				if e := upperEntries(t, r.rootfs.Upper); len(e) != 0 {
					t.Errorf("stubs left after a failed setup: %v", e)
				}
			},
		},
		{
			name: "network none has only lo, and it is up",
			spec: RunSpec{Network: "none", Args: sh("ls /sys/class/net; cat /sys/class/net/lo/flags; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				lines := strings.Split(strings.TrimSpace(r.out), "\n")
				if len(lines) != 3 || lines[0] != "lo" || lines[2] != "ping" {
					t.Fatalf("output %q, want lo, its flags, ping", r.out)
				}
				var flags uint
				fmt.Sscanf(lines[1], "0x%x", &flags)
				if flags&unix.IFF_UP == 0 {
					t.Errorf("lo flags %s: not up", lines[1])
				}
			},
		},
		{
			name: "host network is shared with its entitlement",
			spec: RunSpec{Network: NetworkHost, Sandbox: Sandbox{Allow: []string{EntitlementNetworkHost}}, Args: sh("ls /sys/class/net")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				host, _ := os.ReadDir("/sys/class/net")
				if got := len(strings.Fields(r.out)); got != len(host) {
					t.Errorf("sandbox sees %d interfaces, host %d", got, len(host))
				}
			},
		},
		{
			name: "default hostname",
			spec: RunSpec{Args: sh("hostname; cat /etc/hosts")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				want := "buildkitsandbox\n127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
				if r.out != want {
					t.Errorf("output %q, want %q", r.out, want)
				}
			},
		},
		{
			name: "custom hostname",
			spec: RunSpec{Hostname: "kiln-test", Args: []string{"hostname"}},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "kiln-test\n" {
					t.Errorf("hostname %q", r.out)
				}
			},
		},
		{
			name: "hosts and resolv.conf are mounted, read-only, and not in the layer",
			spec: RunSpec{Args: sh("test -s /etc/hosts && (test ! -e /etc/resolv.conf || test -s /etc/resolv.conf) && echo ok; echo x >> /etc/hosts 2>/dev/null || echo ro; echo new > /etc/new")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "ok\nro\n" {
					t.Errorf("output %q", r.out)
				}
				// The command wrote to /etc: etc stays, hosts does not.
				got := upperEntries(t, r.rootfs.Upper)
				if want := []string{"etc d", "etc/new f"}; strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("upper = %v, want %v", got, want)
				}
			},
		},
		{
			name: "files are provided and stay out of the layer",
			spec: RunSpec{
				Files: []File{
					{Path: "/dev/pipes/script", Data: []byte("#!/bin/sh\necho script $0\n"), Mode: 0o755},
					{Path: "/etc/app.conf", Data: []byte("conf\n")},
					{Path: "/opt/new/tool", Data: []byte("#!/bin/sh\necho tool\n"), Mode: 0o755},
				},
				Args: sh("/dev/pipes/script && cat /etc/app.conf && /opt/new/tool && stat -c %a /etc/app.conf && echo x > /etc/app.conf 2>/dev/null || echo ro"),
			},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "script /dev/pipes/script\nconf\ntool\n644\nro\n" {
					t.Errorf("output %q", r.out)
				}
				if e := upperEntries(t, r.rootfs.Upper); len(e) != 0 {
					t.Errorf("upper = %v, want empty", e)
				}
			},
		},
		{
			name: "pid 1 is the sandbox init",
			spec: RunSpec{Args: sh(`tr '\0' ' ' < /proc/1/cmdline; echo; echo $$`)},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				lines := strings.Split(r.out, "\n")
				if !strings.Contains(lines[0], sandboxArg) {
					t.Errorf("/proc/1/cmdline = %q", lines[0])
				}
				if lines[1] == "1" || lines[1] == "" {
					t.Errorf("$$ = %q, want > 1", lines[1])
				}
			},
		},
		{
			name: "only stdio reaches the command, stdin is /dev/null",
			// ls replaces the shell, keeping every descriptor the shell
			// was given, and lists its own: 3 is the directory it reads.
			// (Listing the shell's own races with busybox sh, which holds
			// a pipeline's pipe as fds 3 and 4, or a redirection's saved
			// fd as 10, while it runs one; seen without any sandbox.)
			spec: RunSpec{Args: sh(`readlink /proc/self/fd/0; cat; echo eof; exec ls /proc/self/fd`)},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "/dev/null\neof\n0\n1\n2\n3\n" {
					t.Errorf("output %q", r.out)
				}
			},
		},
		{
			name: "dev has the usual devices",
			spec: RunSpec{Args: sh(`echo x > /dev/null && head -c 5 /dev/urandom | wc -c && head -c 3 /dev/zero | wc -c && test -c /dev/tty && test -d /dev/pts && test -L /dev/ptmx && test -d /dev/shm && readlink /dev/fd && test -d /dev/mqueue`)},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "5\n3\n/proc/self/fd\n" {
					t.Errorf("output %q", r.out)
				}
			},
		},
		{
			name: "root has Docker's default capabilities",
			spec: RunSpec{Args: sh(`grep -E '^Cap(Bnd|Eff)' /proc/self/status; mount -t tmpfs t /tmp 2>/dev/null || echo no mount`)},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if want := "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nno mount\n"; r.out != want {
					t.Errorf("output %q, want %q", r.out, want)
				}
			},
		},
		{
			name: "orphans are reaped",
			spec: RunSpec{Args: sh(`(true &); sleep 0.2; cat /proc/[0-9]*/stat | awk '$3 == "Z"' | grep . || echo none`)},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "none\n" {
					t.Errorf("zombies: %q", r.out)
				}
			},
		},
		{
			name: "sys is read-only",
			spec: RunSpec{Args: sh(`touch /sys/x 2>/dev/null || echo ro`)},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "ro\n" {
					t.Errorf("output %q", r.out)
				}
			},
		},
		{
			name: "env is the step's, plus HOME from passwd like runc",
			spec: RunSpec{Args: []string{"/bin/env"}, Env: []string{"PATH=/bin", "FOO=bar baz"}},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "PATH=/bin\nFOO=bar baz\nHOME=/root\n" {
					t.Errorf("env %q", r.out)
				}
			},
		},
		{
			name: "HOME of the step wins",
			spec: RunSpec{User: "nobody", Args: []string{"/bin/env"}, Env: []string{"HOME=/h", testPath}},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "HOME=/h\n"+testPath+"\n" {
					t.Errorf("env %q", r.out)
				}
			},
		},
		{
			name: "HOME of a uid without passwd entry is /",
			spec: RunSpec{User: "1234:1234", Args: sh("echo $HOME")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "/\n" {
					t.Errorf("HOME %q", r.out)
				}
			},
		},
		{
			name: "missing cwd is created",
			spec: RunSpec{Cwd: "/work/dir", Args: []string{"pwd"}},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "/work/dir\n" {
					t.Errorf("pwd %q", r.out)
				}
				if fi, err := os.Stat(filepath.Join(r.rootfs.Upper, "work/dir")); err != nil || !fi.IsDir() {
					t.Errorf("working directory not in upper: %v", err)
				}
			},
		},
		{
			name: "background processes die with the step",
			spec: RunSpec{Args: sh("sleep 100 & echo started")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "started\n" {
					t.Errorf("output %q", r.out)
				}
			},
		},
		{
			name:   "two lowers with existing mount points",
			lowers: []string{top, base},
			spec:   RunSpec{Args: sh("rm /top-file; ls -d /proc/1 /sys/class /dev/null")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				if r.out != "/dev/null\n/proc/1\n/sys/class\n" {
					t.Errorf("output %q", r.out)
				}
				if got := upperEntries(t, r.rootfs.Upper); len(got) != 1 || got[0] != "top-file c" {
					t.Errorf("upper = %v, want only the whiteout", got)
				}
			},
		},
		{
			name:   "symlinked resolv.conf is resolved inside the root",
			lowers: []string{evil, base},
			spec:   RunSpec{Args: sh("test -e /elsewhere/resolv.conf && echo inside || echo none")},
			check: func(t *testing.T, r runResult) {
				must(t, r.err)
				want := "inside\n"
				if hostResolv != nil {
					want = "none\n"
				}
				if r.out != want {
					t.Errorf("output %q, want %q", r.out, want)
				}
				if e := upperEntries(t, r.rootfs.Upper); len(e) != 0 {
					t.Errorf("upper = %v, want empty", e)
				}
			},
		},
		{
			name:   "FIFO /etc/passwd with USER name fails, never hangs",
			lowers: []string{fifo, base},
			spec:   RunSpec{User: "nobody", Args: []string{"/bin/true"}},
			check: func(t *testing.T, r runResult) {
				if r.err == nil || !strings.Contains(r.err.Error(), "/etc/passwd: not a regular file") {
					t.Errorf("err = %v, want /etc/passwd refused as not a regular file", r.err)
				}
			},
		},
		{
			name:   "scratch",
			lowers: []string{},
			spec:   RunSpec{Args: []string{"/bin/sh"}},
			check: func(t *testing.T, r runResult) {
				var ee *ExitError
				if !errors.As(r.err, &ee) || ee.Code != 127 {
					t.Fatalf("err = %v, want exit code 127", r.err)
				}
				if e := upperEntries(t, r.rootfs.Upper); len(e) != 0 {
					t.Errorf("upper = %v, want empty", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lowers := tt.lowers
			if lowers == nil {
				lowers = []string{base}
			}
			spec := tt.spec
			spec.Rootfs = newRootfs(t, lowers...)
			if spec.Env == nil {
				spec.Env = []string{testPath}
			}
			var stdout, stderr bytes.Buffer
			spec.Stdout, spec.Stderr = &stdout, &stderr
			err := Run(context.Background(), spec)
			if stderr.Len() > 0 {
				t.Logf("stderr: %s", stderr.String())
			}
			tt.check(t, runResult{out: stdout.String(), err: err, rootfs: spec.Rootfs})
			assertStepGone(t, spec.Rootfs.Upper)
		})
	}
}

// assertStepGone checks that no step directory is left next to upper and
// that no mount refers to its parent.
func assertStepGone(t *testing.T, upper string) {
	t.Helper()
	parent := filepath.Dir(upper)
	left, _ := filepath.Glob(filepath.Join(parent, ".kiln-step-*"))
	if len(left) > 0 {
		t.Errorf("step directories left: %v", left)
	}
	mounts, err := os.ReadFile("/proc/mounts")
	must(t, err)
	if bytes.Contains(mounts, []byte(parent)) {
		t.Errorf("/proc/mounts refers to %s", parent)
	}
}

func TestRunReadOnlyRootfs(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	var out, errOut bytes.Buffer
	err := Run(context.Background(), RunSpec{
		Rootfs: Rootfs{Lowers: []string{base}},
		Env:    []string{testPath},
		Stdout: &out,
		Stderr: &errOut,
		Args:   []string{"/bin/sh", "-c", "cat /etc/hosts >/dev/null && head -1 /etc/passwd; touch /x 2>/dev/null || echo read-only"},
	})
	must(t, err)
	if out.String() != "root:x:0:0:root:/root:/bin/sh\nread-only\n" {
		t.Errorf("output %q, stderr %q", out.String(), errOut.String())
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "kiln-step-*"))
	if len(left) > 0 {
		t.Errorf("step directories left: %v", left)
	}
}

func TestRunManyLowers(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	// 80 layers whose absolute paths do not fit in a page of mount options.
	layers := filepath.Join(t.TempDir(), strings.Repeat("long-layer-directory-", 4))
	var lowers []string
	for i := range 80 {
		l := filepath.Join(layers, fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 30)))
		must(t, os.MkdirAll(l, 0o755))
		must(t, os.WriteFile(filepath.Join(l, fmt.Sprintf("f%02d", i)), nil, 0o644))
		lowers = append([]string{l}, lowers...)
	}
	// The base joins the others, as layers of one store do.
	must(t, os.Symlink(base, filepath.Join(layers, "base")))
	lowers = append(lowers, filepath.Join(layers, "base"))
	if n := len(strings.Join(lowers, ":")); n < 4096 {
		t.Fatalf("lowerdir only %d bytes: test would not cover relative paths", n)
	}
	rootfs := newRootfs(t, lowers...)
	var out bytes.Buffer
	err := Run(context.Background(), RunSpec{Rootfs: rootfs, Env: []string{testPath}, Stdout: &out, Args: []string{"/bin/sh", "-c", "ls / | grep -c '^f'"}})
	must(t, err)
	if out.String() != "80\n" {
		t.Errorf("sandbox sees %q layer files, want 80", out.String())
	}
}

func TestRunCancel(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	rootfs := newRootfs(t, base)
	ctx, cancel := context.WithCancel(context.Background())
	// A duration no other process on the machine uses, to find leftovers.
	marker := fmt.Sprint(100000 + time.Now().UnixNano()%100000)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- Run(ctx, RunSpec{
			Rootfs: rootfs,
			Env:    []string{testPath},
			Args:   []string{"/bin/sh", "-c", "sleep " + marker + " & sleep " + marker},
		})
	}()
	// Let the command start.
	deadline := time.Now().Add(5 * time.Second)
	for len(findProcesses(t, marker)) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(findProcesses(t, marker)); n < 2 {
		t.Fatalf("found %d sleep processes before cancel, want 2", n)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if left := findProcesses(t, marker); len(left) > 0 {
		t.Errorf("processes left after cancel: %v", left)
	}
	assertStepGone(t, rootfs.Upper)
}

func TestRunForwardsSignals(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	marker := fmt.Sprint(200000 + time.Now().UnixNano()%100000)
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), RunSpec{
			Rootfs: newRootfs(t, base),
			Env:    []string{testPath},
			Stdout: &out,
			Args:   []string{"/bin/sh", "-c", `trap "echo got TERM; exit 7" TERM; sleep ` + marker + ` & wait`},
		})
	}()
	// The sandbox init is the parent of the shell.
	var initPid int
	deadline := time.Now().Add(5 * time.Second)
	for initPid == 0 && time.Now().Before(deadline) {
		for _, pid := range findProcesses(t, marker) {
			b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
			if err != nil {
				continue
			}
			var ppid int
			fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			fmt.Sscan(fields[1], &ppid)
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ppid)); bytes.Contains(cmdline, []byte(sandboxArg)) {
				initPid = ppid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if initPid == 0 {
		t.Fatal("sandbox init not found")
	}
	must(t, unix.Kill(initPid, unix.SIGTERM))
	select {
	case err := <-done:
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != 7 || out.String() != "got TERM\n" {
			t.Errorf("err = %v, output %q; want exit code 7 after the trap", err, out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
}

// findProcesses returns the pids whose command line contains s.
func findProcesses(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	must(t, err)
	var pids []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) && !bytes.Contains(b, []byte("-test.")) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestRunParallel(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			rootfs := newRootfs(t, base)
			var out bytes.Buffer
			err := Run(context.Background(), RunSpec{Rootfs: rootfs, Env: []string{testPath}, Cwd: fmt.Sprintf("/w%d", i), Stdout: &out, Args: []string{"pwd"}})
			if err == nil && out.String() != fmt.Sprintf("/w%d\n", i) {
				err = fmt.Errorf("step %d: pwd %q", i, out.String())
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestCopy(t *testing.T) {
	needRoot(t)
	base := busyboxRootfs(t)
	ctxDir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ctxDir, "hello.txt"), []byte("from context\n"), 0o644))
	stage := t.TempDir()
	must(t, os.WriteFile(filepath.Join(stage, "built"), []byte("from stage\n"), 0o644))
	// A whiteout in a lone source layer must read as absent, as it would
	// in an overlay with the layers below.
	must(t, unix.Mknod(filepath.Join(stage, "gone"), unix.S_IFCHR, 0))

	tests := []struct {
		name   string
		lowers []string
		spec   CopySpec
		check  func(t *testing.T, upper string, err error)
	}{
		{
			name: "mkdir lands in upper",
			spec: CopySpec{Op: copier.Op{Kind: "mkdir", Dest: "/a/b"}},
			check: func(t *testing.T, upper string, err error) {
				must(t, err)
				if fi, err := os.Stat(filepath.Join(upper, "a/b")); err != nil || !fi.IsDir() {
					t.Errorf("upper/a/b: %v", err)
				}
			},
		},
		{
			name:   "copy from context onto scratch",
			lowers: []string{},
			spec:   CopySpec{SourceDir: ctxDir, Op: copier.Op{Kind: "copy", Sources: []string{"hello.txt"}, Dest: "/hello.txt"}},
			check: func(t *testing.T, upper string, err error) {
				must(t, err)
				b, err := os.ReadFile(filepath.Join(upper, "hello.txt"))
				must(t, err)
				if string(b) != "from context\n" {
					t.Errorf("content %q", b)
				}
			},
		},
		{
			name: "copy from a stage",
			spec: CopySpec{Source: Rootfs{Lowers: []string{stage}}, Op: copier.Op{Kind: "copy", Sources: []string{"built"}, Dest: "/built", FromStage: true}},
			check: func(t *testing.T, upper string, err error) {
				must(t, err)
				b, err := os.ReadFile(filepath.Join(upper, "built"))
				must(t, err)
				if string(b) != "from stage\n" {
					t.Errorf("content %q", b)
				}
			},
		},
		{
			name: "copy from a two-layer stage",
			spec: CopySpec{Source: Rootfs{Lowers: []string{stage, base}}, Op: copier.Op{Kind: "copy", Sources: []string{"etc/passwd"}, Dest: "/passwd", FromStage: true}},
			check: func(t *testing.T, upper string, err error) {
				must(t, err)
				if _, err := os.Stat(filepath.Join(upper, "passwd")); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "missing source is a NotFoundError",
			spec: CopySpec{SourceDir: ctxDir, Op: copier.Op{Kind: "copy", Sources: []string{"nope"}, Dest: "/nope"}},
			check: func(t *testing.T, upper string, err error) {
				var nf *copier.NotFoundError
				if !errors.As(err, &nf) || nf.Path != "nope" {
					t.Fatalf("err = %#v, want *copier.NotFoundError for nope", err)
				}
				if !strings.Contains(err.Error(), `"nope": not found`) {
					t.Errorf("message %q", err)
				}
			},
		},
		{
			name: "excluded source keeps its pattern",
			spec: CopySpec{SourceDir: ctxDir, Op: copier.Op{Kind: "copy", Sources: []string{"hello.txt"}, Dest: "/x", Excludes: []string{"*.txt"}}},
			check: func(t *testing.T, upper string, err error) {
				var nf *copier.NotFoundError
				if !errors.As(err, &nf) || nf.Path != "hello.txt" || nf.ExcludedBy != "*.txt" {
					t.Fatalf("err = %#v, want *copier.NotFoundError excluded by *.txt", err)
				}
			},
		},
		{
			name: "whiteout in a one-layer source is absent",
			spec: CopySpec{Source: Rootfs{Lowers: []string{stage}}, Op: copier.Op{Kind: "copy", Sources: []string{"gone"}, Dest: "/gone", FromStage: true}},
			check: func(t *testing.T, upper string, err error) {
				var nf *copier.NotFoundError
				if !errors.As(err, &nf) {
					t.Fatalf("err = %v, want *copier.NotFoundError", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lowers := tt.lowers
			if lowers == nil {
				lowers = []string{base}
			}
			spec := tt.spec
			spec.Rootfs = newRootfs(t, lowers...)
			err := Copy(context.Background(), spec)
			tt.check(t, spec.Rootfs.Upper, err)
			assertStepGone(t, spec.Rootfs.Upper)
		})
	}
}

func BenchmarkRunTrue(b *testing.B) {
	needRoot(b)
	base := busyboxRootfs(b)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		rootfs := newRootfs(b, base)
		b.StartTimer()
		if err := Run(context.Background(), RunSpec{Rootfs: rootfs, Env: []string{testPath}, Args: []string{"/bin/true"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyStep is the per-COPY overhead: one small file from a
// context into a one-layer rootfs, sandbox child included.
func BenchmarkCopyStep(b *testing.B) {
	needRoot(b)
	base := busyboxRootfs(b)
	ctxDir := b.TempDir()
	must(b, os.WriteFile(filepath.Join(ctxDir, "f"), []byte("x\n"), 0o644))
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		rootfs := newRootfs(b, base)
		b.StartTimer()
		if err := Copy(context.Background(), CopySpec{Rootfs: rootfs, SourceDir: ctxDir, Op: copier.Op{Kind: "copy", Sources: []string{"f"}, Dest: "/app/"}}); err != nil {
			b.Fatal(err)
		}
	}
}
