package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/kiln-build/kiln/internal/testutil"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netProbeSource connects to each "network,address" argument and prints
// what it got; "http,URL" fetches URL, resolving its name through the
// step's /etc/resolv.conf (Go's own resolver: busybox's static wget has
// no working one). busybox nc knows no abstract unix sockets.
const netProbeSource = `package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	for _, a := range os.Args[1:] {
		network, addr, _ := strings.Cut(a, ",")
		if network == "http" {
			c := http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get(addr)
			if err != nil {
				fmt.Printf("%s: failed: %v\n", a, err)
				continue
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
			resp.Body.Close()
			fmt.Printf("%s: got %s\n", a, strings.TrimSpace(string(b)))
			continue
		}
		c, err := net.DialTimeout(network, addr, 3*time.Second)
		if err != nil {
			fmt.Printf("%s: refused\n", a)
			continue
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(c, 100))
		c.Close()
		fmt.Printf("%s: connected %s\n", a, strings.TrimSpace(string(b)))
	}
}
`

// buildNetProbe compiles netProbeSource, statically.
func buildNetProbe(t *testing.T) []byte {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(netProbeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module netprobe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "netprobe")
	cmd := exec.Command("go", "build", "-o", dst, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, out)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// needPasta skips when the default network cannot be set up here.
func needPasta(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("pasta"); err != nil {
		testutil.SkipHost(t, "needs pasta for RUN's default network (apt-get install passt)")
	}
}

// serveSecret accepts connections on l and writes a secret to each.
func serveSecret(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("host secret\n"))
		c.Close()
	}
}

// TestNetworkIsolation: a RUN step of the default network reaches neither
// a TCP service on the host's loopback nor a host abstract unix socket;
// host networking, which would, needs --allow network.host, from the
// command line and from RUN --network=host alike.
func TestNetworkIsolation(t *testing.T) {
	needRoot(t)
	needPasta(t)
	reg := registryWithBases(t)
	probe := buildNetProbe(t)

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	go serveSecret(tcp)
	abstract := fmt.Sprintf("@kiln-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	unixL, err := net.Listen("unix", abstract)
	if err != nil {
		t.Fatal(err)
	}
	defer unixL.Close()
	go serveSecret(unixL)

	targets := fmt.Sprintf("tcp,%s unix,%s", tcp.Addr(), abstract)
	// /proc/net/unix lists the sockets of the reader's network namespace.
	run := fmt.Sprintf("(/probe %s; grep -c %s /proc/net/unix; true) > /result", targets, abstract[1:])
	refused := fmt.Sprintf("tcp,%s: refused\nunix,%s: refused\n0\n", tcp.Addr(), abstract)
	connected := fmt.Sprintf("tcp,%s: connected host secret\nunix,%s: connected host secret\n1\n", tcp.Addr(), abstract)
	tests := []struct {
		name     string
		run      string // the RUN instruction's flags
		args     []string
		wantCode int
		wantLog  []string
		want     string
	}{
		{name: "default network", want: refused},
		{name: "network default", args: []string{"--network=default"}, want: refused},
		{name: "host network without entitlement", args: []string{"--network=host"}, wantCode: exitUsage,
			wantLog: []string{"--network=host", "add --allow network.host"}},
		{name: "host network", args: []string{"--network=host", "--allow", "network.host"}, want: connected},
		{name: "RUN --network=host without entitlement", run: "--network=host ", wantCode: exitFailed,
			wantLog: []string{"Dockerfile:3: RUN --network=host:", "needs --allow network.host"}},
		{name: "RUN --network=host", run: "--network=host ", args: []string{"--allow", "network.host"}, want: connected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, ctxDir := t.TempDir(), t.TempDir()
			writeContext(t, ctxDir, fmt.Sprintf("FROM %s/library/busybox:latest\nCOPY --chmod=755 probe /probe\nRUN %s%s\n", reg, tt.run, run),
				map[string]string{"probe": string(probe)})
			out := filepath.Join(t.TempDir(), "out")
			args := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=local,dest=" + out}, tt.args...)
			log, code := kilnWithin(t, time.Minute, append(args, ctxDir)...)
			checkNoLeaks(t, root)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d:\n%s", code, tt.wantCode, log)
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(log, w) {
					t.Errorf("output lacks %q:\n%s", w, log)
				}
			}
			if tt.want == "" {
				return
			}
			got, err := os.ReadFile(filepath.Join(out, "result"))
			if err != nil {
				t.Fatalf("reading the result: %v\n%s", err, log)
			}
			if string(got) != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// kilnWithin runs kiln like kiln(), killing it after d.
func kilnWithin(t *testing.T, d time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return kilnCmd(t, exec.CommandContext(ctx, kilnBin, args...))
}

// kilnCmd runs a prepared kiln command; it returns stdout+stderr and the
// exit code.
func kilnCmd(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("running kiln: %v\n%s", err, out.String())
	}
	return out.String(), 0
}

// testNet is a pair of network namespaces the test creates: kiln runs in
// client, whose default route leads through a veth pair to server, the
// stand-in for the internet; nothing changes in the host's namespace.
type testNet struct {
	client, server string // names under /run/netns
	resolvConf     string // the client's, naming the server's DNS
}

const (
	clientAddr  = "198.18.0.2"
	gatewayAddr = "198.18.0.1"
	webAddr     = "198.19.0.10" // on the server's lo, routed through the gateway
)

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		testutil.SkipHost(t, "needs ip (apt-get install iproute2)")
	}
	id := fmt.Sprintf("%d%d", os.Getpid()%1000, time.Now().UnixNano()%100000)
	n := &testNet{client: "kiln-c" + id, server: "kiln-s" + id}
	ipCmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", n.client).Run()
		exec.Command("ip", "netns", "del", n.server).Run()
	})
	ipCmd("netns", "add", n.client)
	ipCmd("netns", "add", n.server)
	// Created in the client's namespace, the peer in the server's: the
	// host's namespace never holds either end.
	cv, sv := "kc"+id, "ks"+id
	ipCmd("-n", n.client, "link", "add", cv, "type", "veth", "peer", "name", sv, "netns", n.server)
	ipCmd("-n", n.client, "addr", "add", clientAddr+"/24", "dev", cv)
	ipCmd("-n", n.client, "link", "set", cv, "up")
	ipCmd("-n", n.client, "link", "set", "lo", "up")
	ipCmd("-n", n.client, "route", "add", "default", "via", gatewayAddr)
	ipCmd("-n", n.server, "addr", "add", gatewayAddr+"/24", "dev", sv)
	ipCmd("-n", n.server, "addr", "add", webAddr+"/32", "dev", "lo")
	ipCmd("-n", n.server, "link", "set", sv, "up")
	ipCmd("-n", n.server, "link", "set", "lo", "up")
	n.resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(n.resolvConf, []byte("nameserver "+webAddr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// command runs name in the client namespace, with the client's
// resolv.conf bound over /etc/resolv.conf (for kiln, and so for pasta,
// which forwards the steps' DNS queries to it) in a mount namespace of
// its own. Unlike ip netns exec, it leaves /sys, and the cgroups there,
// as they are.
func (n *testNet) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + filepath.Join("/run/netns", n.client), "--",
		"unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, n.resolvConf, name}, args...)...)
}

// in runs f with the calling goroutine's thread in the namespace name:
// the sockets f creates belong to it.
func in(t *testing.T, name string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// A thread that cannot go back dies with its locked goroutine.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	f()
}

// serveDNS answers A queries for name with addr, and every other query
// with no answer, on pc.
func serveDNS(pc net.PacketConn, name string, addr net.IP) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		// The question: labels up to a zero byte, then type and class.
		i := 12
		var labels []string
		for i < len(q) && q[i] != 0 {
			l := int(q[i])
			if i+1+l > len(q) {
				break
			}
			labels = append(labels, string(q[i+1:i+1+l]))
			i += 1 + l
		}
		if i+5 > len(q) {
			continue
		}
		qtype := binary.BigEndian.Uint16(q[i+1:])
		question := q[12 : i+5]
		answer := strings.EqualFold(strings.Join(labels, "."), name) && qtype == 1
		resp := make([]byte, 12, 64)
		copy(resp, q[:2])                            // id
		binary.BigEndian.PutUint16(resp[2:], 0x8180) // response, recursion available, no error
		binary.BigEndian.PutUint16(resp[4:], 1)      // one question
		resp = append(resp, question...)
		if answer {
			binary.BigEndian.PutUint16(resp[6:], 1)
			resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
			resp = append(resp, addr.To4()...)
		}
		pc.WriteTo(resp, from)
	}
}

// TestNetworkOutbound is the stand-in for apt-get update: from a RUN step
// of the default network, a name resolves through pasta's DNS forwarder
// and an HTTP server beyond the gateway answers; the gateway address does
// not lead to kiln's loopback, nor does 127.0.0.1. kiln runs in a network
// namespace of the test's, so that every packet stays in namespaces the
// test created.
func TestNetworkOutbound(t *testing.T) {
	needRoot(t)
	needPasta(t)
	reg := registryWithBases(t)
	probe := buildNetProbe(t)
	tn := newTestNet(t)

	var web net.Listener
	var dns net.PacketConn
	in(t, tn.server, func() {
		var err error
		if web, err = net.Listen("tcp", webAddr+":0"); err != nil {
			t.Fatal(err)
		}
		if dns, err = net.ListenPacket("udp", webAddr+":53"); err != nil {
			t.Fatal(err)
		}
	})
	defer web.Close()
	defer dns.Close()
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "outbound ok\n")
	}))
	go serveDNS(dns, "web.kiln.test", net.ParseIP(webAddr))
	// A service on the loopback of kiln's own namespace, which a mapped
	// gateway would lead to.
	var local net.Listener
	in(t, tn.client, func() {
		var err error
		if local, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	defer local.Close()
	go serveSecret(local)
	port := local.Addr().(*net.TCPAddr).Port

	// The base comes from the registry on the host's loopback, which
	// kiln in the client namespace cannot reach: it is put in the store
	// first, by name.
	root := t.TempDir()
	baseCtx := t.TempDir()
	writeContext(t, baseCtx, fmt.Sprintf("FROM %s/library/busybox:latest\nCOPY --chmod=755 probe /probe\n", reg), map[string]string{"probe": string(probe)})
	if log, code := kilnWithin(t, time.Minute, "build", "--root", root, "--progress=plain", "-t", "kiln-net-test/base:1", baseCtx); code != 0 {
		t.Fatalf("building the base: exit %d\n%s", code, log)
	}
	webURL := fmt.Sprintf("http://web.kiln.test:%d/", web.Addr().(*net.TCPAddr).Port)
	// The step probes the gateway its network has: pasta copies the
	// client's, slirp4netns has its own (10.0.2.2).
	ctxDir := t.TempDir()
	writeContext(t, ctxDir, fmt.Sprintf("FROM kiln-net-test/base:1\n"+
		"RUN gw=$(ip route | awk '/^default/ {print $3}') && (echo gateway $gw; /probe http,%s tcp,$gw:%d tcp,127.0.0.1:%d) > /result\n",
		webURL, port, port), nil)
	// A pasta that cannot start leaves the network to slirp4netns.
	failing := t.TempDir()
	writeFile(t, filepath.Join(failing, "pasta"), "#!/bin/sh\nexit 1\n")
	must(t, os.Chmod(filepath.Join(failing, "pasta"), 0o755))
	for _, tt := range []struct {
		helper, path, gateway string
	}{
		{"pasta", os.Getenv("PATH"), gatewayAddr},
		{"slirp4netns", failing + ":" + os.Getenv("PATH"), "10.0.2.2"},
	} {
		t.Run(tt.helper, func(t *testing.T) {
			if _, err := exec.LookPath(tt.helper); err != nil {
				testutil.SkipHostf(t, "needs %s", tt.helper)
			}
			out := filepath.Join(t.TempDir(), "out")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := tn.command(ctx, kilnBin, "build", "--root", root, "--progress=plain", "--no-cache", "-o", "type=local,dest="+out, ctxDir)
			cmd.Env = append(os.Environ(), "PATH="+tt.path)
			log, code := kilnCmd(t, cmd)
			checkNoLeaks(t, root)
			if code != 0 {
				t.Fatalf("exit code %d:\n%s", code, log)
			}
			got, err := os.ReadFile(filepath.Join(out, "result"))
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("gateway %[1]s\nhttp,%[2]s: got outbound ok\ntcp,%[1]s:%[3]d: refused\ntcp,127.0.0.1:%[3]d: refused\n", tt.gateway, webURL, port)
			if string(got) != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// netnsLink finds the namespace a step printed (readlink
// /proc/self/ns/net) in kiln's output.
var netnsLink = regexp.MustCompile(`net:\[\d+\]`)

// netnsUsers lists what still holds the network namespace link: a
// process's thread in it, or a mount of it.
func netnsUsers(t *testing.T, link string) []string {
	t.Helper()
	var users []string
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, p := range tasks {
		if l, err := os.Readlink(p); err == nil && l == link {
			users = append(users, p)
		}
	}
	mounts, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
	for _, p := range mounts {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(link)) {
			users = append(users, "mount in "+p)
		}
	}
	return users
}

// TestNetworkTeardown: whether the build succeeds, fails or is
// interrupted, its network ends with it: no pasta, no process in the
// namespace, no mount of it.
func TestNetworkTeardown(t *testing.T) {
	needRoot(t)
	needPasta(t)
	reg := registryWithBases(t)
	tests := []struct {
		name     string
		run      string
		signal   syscall.Signal
		wantCode int
	}{
		{name: "success", run: "readlink /proc/self/ns/net"},
		{name: "failure", run: "readlink /proc/self/ns/net; exit 3", wantCode: exitFailed},
		{name: "interrupt", run: "readlink /proc/self/ns/net; sleep %s", signal: syscall.SIGINT, wantCode: 130},
		// No chance to tidy up: pasta goes by its parent-death signal.
		{name: "kill", run: "readlink /proc/self/ns/net; sleep %s", signal: syscall.SIGKILL, wantCode: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, ctxDir := t.TempDir(), t.TempDir()
			marker := fmt.Sprint(4000000 + time.Now().UnixNano()%1000000)
			run := tt.run
			if strings.Contains(run, "%s") {
				run = fmt.Sprintf(run, marker)
			}
			writeContext(t, ctxDir, fmt.Sprintf("FROM %s/library/busybox:latest\nRUN echo first\nRUN %s\n", reg, run), nil)
			cmd := exec.Command(kilnBin, "build", "--root", root, "--progress=plain", ctxDir)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			link := ""
			if tt.signal != 0 {
				deadline := time.Now().Add(time.Minute)
				for len(processesWith(t, "sleep "+marker)) == 0 {
					if time.Now().After(deadline) {
						cmd.Process.Kill()
						<-done
						t.Fatalf("the step did not start:\n%s", out.String())
					}
					time.Sleep(20 * time.Millisecond)
				}
				// Its output may not be shown before the build stops.
				for _, pid := range processesWith(t, "sleep "+marker) {
					if l, err := os.Readlink("/proc/" + pid + "/ns/net"); err == nil {
						link = l
					}
				}
				// The build's network is up: its pasta runs.
				if len(processesWith(t, "--netns "+root)) == 0 {
					t.Errorf("no pasta for the build's network (cmdline with --netns %s)", root)
				}
				if err := cmd.Process.Signal(tt.signal); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				cmd.Process.Kill()
				<-done
				t.Fatalf("kiln did not finish:\n%s", out.String())
			}
			log := out.String()
			if code := cmd.ProcessState.ExitCode(); code != tt.wantCode {
				t.Errorf("exit code %d, want %d:\n%s", code, tt.wantCode, log)
			}
			if tt.signal != syscall.SIGKILL {
				checkNoLeaks(t, root)
			}
			if link == "" {
				link = netnsLink.FindString(log)
			}
			if link == "" {
				t.Fatalf("the step printed no network namespace:\n%s", log)
			}
			if host, _ := os.Readlink("/proc/self/ns/net"); link == host {
				t.Fatalf("the step ran in the host's network namespace %s", host)
			}
			// Processes of the build die with kiln (the last ones with
			// their PID namespace, asynchronously): allow a moment.
			deadline := time.Now().Add(10 * time.Second)
			for {
				users := append(netnsUsers(t, link), processesWith(t, "--netns "+root)...)
				if len(users) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the build's network (namespace %s, pasta) outlived the build: %v", link, users)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestRootlessNetwork: a normal user's kiln gives RUN the same isolated
// network, pasta running in kiln's user namespace, where the user may
// open /dev/net/tun (most systems); where it may not, the build says so.
func TestRootlessNetwork(t *testing.T) {
	needRootless(t)
	needPasta(t)
	name, uid, gid := throwawayUser(t)
	dir := userTree(t, "kiln-rootless-net-", uid, gid)
	top := filepath.Dir(dir("ctx"))
	dir("root")
	dir("out")
	bin := filepath.Join(top, "kiln")
	copyFile(t, kilnBin, bin, 0o755)

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer tcp.Close()
	go serveSecret(tcp)
	reg := registryWithBases(t)
	writeFile(t, filepath.Join(top, "ctx", "Dockerfile"), fmt.Sprintf("FROM %s/library/busybox:latest\n"+
		"RUN (head -n1 /etc/resolv.conf; readlink /proc/self/ns/net; nc -w 3 %s </dev/null || echo refused) > /result\n", reg, strings.Replace(tcp.Addr().String(), ":", " ", 1)))
	out := filepath.Join(top, "out", "rootfs")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "build", "--root", filepath.Join(top, "root"), "--progress=plain", "-o", "type=local,dest="+out, filepath.Join(top, "ctx"))
	cmd.Dir = top
	cmd.Env = []string{"HOME=" + top, "PATH=" + os.Getenv("PATH"), "USER=" + name, "KILN_SYNC=wait"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	log, code := kilnCmd(t, cmd)

	tun := exec.Command("sh", "-c", "exec 3<>/dev/net/tun")
	tun.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if tun.Run() != nil {
		if code == 0 || !strings.Contains(log, "needs /dev/net/tun") || !strings.Contains(log, "--network=none") {
			t.Fatalf("/dev/net/tun is closed to users here: exit code %d, want a failure that says so:\n%s", code, log)
		}
		t.Logf("/dev/net/tun is closed to users here: the build said so")
		return
	}
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, log)
	}
	got, err := os.ReadFile(filepath.Join(out, "result"))
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	host, _ := os.Readlink("/proc/self/ns/net")
	if len(lines) != 3 || lines[0] != "nameserver 169.254.1.1" || lines[1] == host || lines[2] != "refused" {
		t.Errorf("got:\n%s\nwant pasta's resolver, a network namespace of the build's, and the host's loopback refused", got)
	}
}
