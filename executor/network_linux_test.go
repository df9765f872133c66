package executor

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testutil"
)

func TestHelperArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want [][]string // each a run of consecutive arguments
	}{
		{
			name: "pasta",
			args: pastaArgs("/ns", "/pid"),
			want: [][]string{
				{"--no-map-gw"},
				{"-t", "none"}, {"-u", "none"}, {"-T", "none"}, {"-U", "none"},
				{"--netns", "/ns"}, {"--config-net"}, {"--foreground"},
				{"--dns-forward", pastaDNS},
			},
		},
		{
			name: "slirp4netns",
			args: slirpArgs("/ns", 3, 4),
			want: [][]string{
				{"--disable-host-loopback"}, {"--configure"},
				{"--netns-type=path", "/ns", "tap0"}, {"--ready-fd=3"}, {"--exit-fd=4"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.want {
				found := false
				for i := range tt.args {
					if i+len(w) <= len(tt.args) && slices.Equal(tt.args[i:i+len(w)], w) {
						found = true
					}
				}
				if !found {
					t.Errorf("%s %q lacks %q", tt.name, tt.args, w)
				}
			}
			// Port forwarding "auto" would mirror the host's loopback
			// ports into the namespace.
			for i, a := range tt.args {
				if a == "auto" || strings.HasPrefix(a, "--map-host-loopback") || (i > 0 && tt.args[i-1] == "--map-host-loopback") {
					t.Errorf("%s %q: %s", tt.name, tt.args, a)
				}
			}
		})
	}
}

func TestResolvConf(t *testing.T) {
	tests := []struct {
		name, host, want string
	}{
		{
			name: "systemd-resolved",
			host: "# comment\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.com\n",
			want: "nameserver 169.254.1.1\noptions edns0 trust-ad\nsearch example.com\n",
		},
		{
			name: "reachable resolvers are kept, three at most",
			host: "nameserver 192.0.2.53\nnameserver ::1\nnameserver 2001:db8::53\nnameserver 198.51.100.53\n",
			want: "nameserver 169.254.1.1\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n",
		},
		{name: "no host file", host: "", want: "nameserver 169.254.1.1\n"},
		{name: "garbage", host: "nameserver\nnameserver not-an-ip\nsortlist x\n", want: "nameserver 169.254.1.1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(resolvConf([]byte(tt.host), pastaDNS)); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// needHelper skips when the user-mode network helper is not installed.
func needHelper(t *testing.T, helper string) {
	t.Helper()
	if _, err := exec.LookPath(helper); err != nil {
		testutil.SkipHostf(t, "needs %s (apt-get install %s)", helper, map[string]string{"pasta": "passt"}[helper]+map[string]string{"slirp4netns": "slirp4netns"}[helper])
	}
}

// withHelpers makes NewNetwork consider only helpers during the test.
func withHelpers(t *testing.T, helpers ...string) {
	old := userNetHelpers
	userNetHelpers = helpers
	t.Cleanup(func() { userNetHelpers = old })
}

// netnsInUse reports whether any process is in the network namespace
// link (as /proc/PID/ns/net reads), or any mount binds it.
func netnsInUse(t *testing.T, link string) []string {
	t.Helper()
	var users []string
	links, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, p := range links {
		if l, err := os.Readlink(p); err == nil && l == link {
			users = append(users, p)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, link) {
			users = append(users, "mount: "+line)
		}
	}
	return users
}

// TestNetwork runs steps in one build network, with each helper: they
// share it, see only lo and the helper's interface, get the forwarder as
// resolver, and cannot reach a service on the host's loopback. Closing
// the network leaves no process in it and no mount of it.
func TestNetwork(t *testing.T) {
	needRoot(t)
	for _, helper := range []string{"pasta", "slirp4netns"} {
		t.Run(helper, func(t *testing.T) {
			needHelper(t, helper)
			withHelpers(t, helper)
			lower := busyboxRootfs(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			n, err := NewNetwork(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if n.Helper != helper {
				t.Errorf("helper %s, want %s", n.Helper, helper)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("host secret\n"))
					c.Close()
				}
			}()
			port := l.Addr().(*net.TCPAddr).Port
			hostNet, _ := os.Readlink("/proc/self/ns/net")
			run := func(script string) string {
				t.Helper()
				var out bytes.Buffer
				err := Run(ctx, RunSpec{Rootfs: newRootfs(t, lower), Net: n, Env: []string{testPath},
					Args: []string{"/bin/sh", "-c", script}, Stdout: &out, Stderr: &out})
				if err != nil {
					t.Fatalf("%v\n%s", err, out.String())
				}
				return out.String()
			}
			first := run("readlink /proc/self/ns/net")
			second := run("readlink /proc/self/ns/net; ls /sys/class/net | grep -v '^lo$' | grep -c .; cat /sys/class/net/lo/operstate; cat /etc/resolv.conf")
			lines := strings.Split(second, "\n")
			if lines[0] != strings.TrimSpace(first) {
				t.Errorf("steps in different namespaces: %s and %s", first, lines[0])
			}
			if lines[0] == hostNet {
				t.Errorf("step in the host's network namespace %s", hostNet)
			}
			if lines[1] != "1" {
				t.Errorf("%s interfaces besides lo, want 1:\n%s", lines[1], second)
			}
			if lines[2] != "unknown" && lines[2] != "up" {
				t.Errorf("lo is %s", lines[2])
			}
			dns := map[string]string{"pasta": pastaDNS, "slirp4netns": slirpDNS}[helper]
			if lines[3] != "nameserver "+dns {
				t.Errorf("resolv.conf starts with %q, want nameserver %s", lines[3], dns)
			}
			probe := fmt.Sprintf("nc -w 3 127.0.0.1 %d </dev/null || echo refused", port)
			if got := run(probe); strings.Contains(got, "secret") {
				t.Errorf("the step reached the host's loopback: %q", got)
			}
			// The probe itself works: with the host's network it gets
			// through.
			var out bytes.Buffer
			err = Run(ctx, RunSpec{Rootfs: newRootfs(t, lower), Network: NetworkHost, Sandbox: Sandbox{Allow: []string{EntitlementNetworkHost}},
				Env: []string{testPath}, Args: []string{"/bin/sh", "-c", probe}, Stdout: &out, Stderr: &out})
			if err != nil || !strings.Contains(out.String(), "host secret") {
				t.Errorf("probe with the host's network: %v %q", err, out.String())
			}

			var helperPID int
			if n.proc != nil {
				helperPID = n.proc.Process.Pid
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			if helperPID == 0 {
				t.Fatal("no helper process")
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", helperPID)); err == nil {
				t.Errorf("%s (pid %d) still runs after Close", helper, helperPID)
			}
			if users := netnsInUse(t, lines[0]); len(users) > 0 {
				t.Errorf("the build network %s is still in use: %v", lines[0], users)
			}
		})
	}
}

// TestNetworkForOneStep: without a build network, a step of the default
// mode gets one of its own, gone with the step.
func TestNetworkForOneStep(t *testing.T) {
	needRoot(t)
	needHelper(t, "pasta")
	withHelpers(t, "pasta")
	var out bytes.Buffer
	err := Run(context.Background(), RunSpec{Rootfs: newRootfs(t, busyboxRootfs(t)), Env: []string{testPath},
		Args: []string{"/bin/sh", "-c", "readlink /proc/self/ns/net; head -n1 /etc/resolv.conf"}, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	hostNet, _ := os.Readlink("/proc/self/ns/net")
	if len(lines) != 2 || lines[0] == hostNet || lines[1] != "nameserver "+pastaDNS {
		t.Fatalf("output %q, want a network namespace of its own and pasta's resolver", out.String())
	}
	if users := netnsInUse(t, lines[0]); len(users) > 0 {
		t.Errorf("the step's network %s is still in use: %v", lines[0], users)
	}
}

// TestNetworkModes: host networking needs its entitlement, and no helper
// is a clear error before anything runs.
func TestNetworkModes(t *testing.T) {
	needRoot(t)
	lower := busyboxRootfs(t)
	tests := []struct {
		name    string
		network string
		allow   []string
		helpers []string
		wantErr string
	}{
		{name: "host without entitlement", network: "host", wantErr: "needs --allow network.host"},
		{name: "host with entitlement", network: "host", allow: []string{EntitlementNetworkHost}},
		{name: "unknown", network: "bridge", wantErr: `unknown network mode "bridge"`},
		{name: "no helper", network: "", helpers: []string{"kiln-no-such-helper"}, wantErr: "install the passt package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.helpers != nil {
				withHelpers(t, tt.helpers...)
			}
			var out bytes.Buffer
			err := Run(context.Background(), RunSpec{Rootfs: newRootfs(t, lower), Network: tt.network, Sandbox: Sandbox{Allow: tt.allow},
				Env: []string{testPath}, Args: []string{"/bin/sh", "-c", "echo ran"}, Stdout: &out, Stderr: &out})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("%v\n%s", err, out.String())
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			case tt.wantErr != "" && out.Len() > 0:
				t.Errorf("the step ran: %q", out.String())
			}
		})
	}
}

// BenchmarkNetworkSetup is the once-per-build cost of the default
// network: namespace, pasta, resolv.conf, and teardown.
func BenchmarkNetworkSetup(b *testing.B) {
	needRoot(b)
	if _, err := exec.LookPath("pasta"); err != nil {
		b.Skip("needs pasta (apt-get install passt)")
	}
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		n, err := NewNetwork(context.Background(), dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunNetwork compares a trivial step in the build network with
// one in the host's: the difference is the default mode's per-RUN
// overhead.
func BenchmarkRunNetwork(b *testing.B) {
	needRoot(b)
	lower := busyboxRootfs(b)
	for _, mode := range []string{"default", "host", "none"} {
		b.Run(mode, func(b *testing.B) {
			spec := RunSpec{Network: mode, Sandbox: Sandbox{Allow: []string{EntitlementNetworkHost}}, Args: []string{"/bin/true"}}
			if mode == "default" {
				n, err := NewNetwork(context.Background(), b.TempDir())
				if err != nil {
					b.Skip(err)
				}
				defer n.Close()
				spec.Net = n
			}
			for i := 0; i < b.N; i++ {
				spec.Rootfs = newRootfs(b, lower)
				if err := Run(context.Background(), spec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestNetworkFallback: a pasta that fails to start (as one confined by a
// security profile would) leaves the network to slirp4netns; with no
// other helper, its message is in the error.
func TestNetworkFallback(t *testing.T) {
	needRoot(t)
	needHelper(t, "slirp4netns")
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "pasta"), []byte("#!/bin/sh\necho 'Couldn'\\''t open network namespace' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	withHelpers(t, "pasta", "slirp4netns")
	n, err := NewNetwork(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if n.Helper != "slirp4netns" {
		t.Errorf("helper %s, want slirp4netns", n.Helper)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	withHelpers(t, "pasta")
	if _, err := NewNetwork(ctx, ""); err == nil || !strings.Contains(err.Error(), "with pasta: pasta exited: Couldn't open network namespace") {
		t.Errorf("err = %v, want pasta's message", err)
	}
}

// TestStartNetwork: a step started as soon as the build network's
// namespace exists, while its helper starts, finds the network up when
// its command runs (an address, a default route, the forwarder in
// resolv.conf); a helper that fails to start fails the step with the
// helper's message, and nothing is left running.
func TestStartNetwork(t *testing.T) {
	needRoot(t)
	needHelper(t, "pasta")
	lower := busyboxRootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	withHelpers(t, "pasta")
	w := NewWarm(ctx)
	defer w.Close()
	w.Expect(1)
	n, err := StartNetworkWarm(ctx, t.TempDir(), w, Sandbox{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var out bytes.Buffer
	err = Run(ctx, RunSpec{Rootfs: newRootfs(t, lower), Net: n, Warm: w, Env: []string{testPath},
		Args:   []string{"/bin/sh", "-c", "cat /etc/resolv.conf; cat /proc/net/route"},
		Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "nameserver "+pastaDNS) {
		t.Errorf("resolv.conf lacks the forwarder:\n%s", out.String())
	}
	if !regexp.MustCompile(`(?m)^\S+\s+00000000\s`).MatchString(out.String()) {
		t.Errorf("no default route when the command ran:\n%s", out.String())
	}

	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "pasta"), []byte("#!/bin/sh\nsleep 0.2; echo 'Couldn'\\''t open network namespace' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	bad, err := StartNetworkWarm(ctx, t.TempDir(), nil, Sandbox{})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	marker := fmt.Sprint(300000 + time.Now().UnixNano()%100000)
	err = Run(ctx, RunSpec{Rootfs: newRootfs(t, lower), Net: bad, Env: []string{testPath},
		Args: []string{"/bin/sleep", marker}})
	if err == nil || !strings.Contains(err.Error(), "with pasta: pasta exited: Couldn't open network namespace") {
		t.Errorf("err = %v, want pasta's message", err)
	}
	if left := findProcesses(t, marker); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
}
