// Command fleet is the fleet benchmark of issue 10: a CI fleet is a row of
// runners that each start with an empty store and share one registry, so it
// builds the same context with N empty --roots one after another, all with
// the same --cache-from/--cache-to against Debian's docker-registry on
// 127.0.0.1, and prints per runner the wall time, the bytes it downloaded and
// uploaded (counted by a proxy in front of the registry) and the steps it
// ran. When BuildKit answers (buildctl), it measures BuildKit the same way
// (its state pruned before each runner, --import-cache/--export-cache
// type=registry,mode=max) and prints the ratio.
//
// -workload apt-go is a Debian one instead of -context: a bookworm base,
// apt-get install of Debian's Go toolchain and a go build whose modules come
// through GOPROXY, both from servers this program runs on 127.0.0.1 with
// .debs and modules fetched once on the host (aptgo.go).
//
// Last, one more kiln runner repeats the build with the previous runner's
// store: its cache export must upload nothing and leave the cache's digest
// where it was.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/internal/testutil"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

type config struct {
	kiln, work, context, dockerfile string
	runners                         int
	buildctl, buildkitAddr          string
	label                           string
	// change, when set, is a file of the context each runner rewrites
	// first: a new commit per runner, as a fleet sees, so the steps after
	// it run again and only cache mounts can make them fast.
	change string
	// base is the base image: busybox or debian (bookworm minbase).
	base string
	// buildArgs are more --build-arg NAME=VALUE for both builders.
	buildArgs []string
	// hostNet runs RUN steps on the host's network so they reach the apt
	// repository and the module proxy this program serves on 127.0.0.1.
	hostNet bool
}

func run() error {
	var c config
	flag.StringVar(&c.kiln, "kiln", "bin/kiln", "the kiln binary")
	flag.StringVar(&c.work, "work", "/var/tmp/kiln-fleet", "work directory (stores, registry data, logs)")
	flag.StringVar(&c.context, "context", "", "the build context (required)")
	flag.StringVar(&c.dockerfile, "f", "", "the Dockerfile (default CONTEXT/Dockerfile); ARG BASE names the base image")
	flag.IntVar(&c.runners, "runners", 4, "runners, each with an empty store")
	flag.StringVar(&c.buildctl, "buildctl", "", "buildctl binary; empty or not answering skips BuildKit")
	flag.StringVar(&c.buildkitAddr, "buildkit-addr", "unix:///tmp/peers/buildkitd.sock", "buildkitd address")
	flag.StringVar(&c.label, "label", "workload", "the workload's name in the table")
	flag.StringVar(&c.change, "change", "", "a file in the context each runner rewrites first (a new commit per runner)")
	flag.StringVar(&c.base, "base", "busybox", "the base image pushed to the registry: busybox, or debian (bookworm minbase by debootstrap, cached under KILN_TEST_CACHE)")
	workload := flag.String("workload", "", "apt-go: the built-in offline Debian apt + Go module workload (sets -base debian, writes its own context; RUN steps use the host's network)")
	trash := flag.String("trash", "", "set the last run's work directory aside in this directory instead of removing it (bench/run.sh removes it when the bench is over)")
	cacheDir := flag.String("cache", "", "where apt-go keeps its .debs and Go modules between runs (default KILN_TEST_CACHE/fleet-debian)")
	flag.Parse()
	switch *workload {
	case "":
	case "apt-go":
		c.base = "debian"
	default:
		return fmt.Errorf("-workload %q: the only built-in workload is apt-go", *workload)
	}
	if c.context == "" && *workload == "" {
		return errors.New("-context is required (or -workload apt-go)")
	}
	if c.base != "busybox" && c.base != "debian" {
		return fmt.Errorf("-base %q: use busybox or debian", c.base)
	}
	if err := c.clearWork(*trash); err != nil {
		return err
	}
	for _, d := range []string{"logs", "traces"} {
		if err := os.MkdirAll(filepath.Join(c.work, d), 0o755); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *workload == "apt-go" {
		if *cacheDir == "" {
			*cacheDir = filepath.Join(testutil.CacheDir(), "fleet-debian")
		}
		w, err := prepareAptGo(*cacheDir, c.work)
		if err != nil {
			return err
		}
		c.context, c.change, c.buildArgs = w.context, w.change, w.buildArgs
		// Bench only: the RUN steps must reach this program's servers on
		// the host's 127.0.0.1, which kiln's default isolated network
		// does not. A real fleet's mirrors would be reachable from it.
		c.hostNet = true
	}
	if c.dockerfile == "" {
		c.dockerfile = filepath.Join(c.context, "Dockerfile")
	}

	regHost, stop, err := startRegistry(ctx, c.work)
	if err != nil {
		return err
	}
	defer stop()
	proxy, err := startCountingProxy(regHost)
	if err != nil {
		return err
	}
	baseRepo, err := pushBase(ctx, regHost, c.base)
	if err != nil {
		return err
	}
	host := proxy.host
	// Runners reach the base through the proxy too: a push can mount a
	// layer only from the registry (host name) it pushes to.
	base := host + "/" + baseRepo
	cacheRef := host + "/fleet/cache:main"
	imageRef := host + "/fleet/app:latest"

	fmt.Printf("fleet: %s, %d runners, registry %s (docker-registry), base %s\n", c.label, c.runners, regHost, base)
	showMirror = c.hostNet
	if showMirror {
		fmt.Printf("%-28s %9s %12s %12s %6s %12s %8s\n", "runner", "time (s)", "down (MB)", "up (MB)", "steps", "mirror (MB)", "cpu (s)")
	} else {
		fmt.Printf("%-28s %9s %12s %12s %6s %8s\n", "runner", "time (s)", "down (MB)", "up (MB)", "steps", "cpu (s)")
	}
	var kilnLater []float64
	for i := 1; i <= c.runners; i++ {
		if err := c.commit(i); err != nil {
			return err
		}
		root := filepath.Join(c.work, fmt.Sprintf("root%d", i))
		r, err := kilnRunner(ctx, c, proxy, root, base, cacheRef, imageRef, fmt.Sprintf("kiln-%d", i))
		if err != nil {
			return err
		}
		r.print(fmt.Sprintf("kiln runner %d", i))
		if i > 1 {
			kilnLater = append(kilnLater, r.seconds)
		}
	}
	// The last runner again, on its own store: nothing changed, so the
	// cache export must write nothing.
	before, _ := digestOf(cacheRef)
	r, err := kilnRunner(ctx, c, proxy, filepath.Join(c.work, fmt.Sprintf("root%d", c.runners)), base, cacheRef, imageRef, "kiln-again")
	if err != nil {
		return err
	}
	after, _ := digestOf(cacheRef)
	r.print("kiln, unchanged re-export")
	same := "unchanged"
	if before != after {
		same = fmt.Sprintf("CHANGED %s -> %s", before, after)
	}
	fmt.Printf("cache digest across the unchanged re-export: %s (%s)\n", same, after)

	if c.buildctl == "" || exec.Command(c.buildctl, "--addr", c.buildkitAddr, "debug", "workers").Run() != nil {
		fmt.Println("BuildKit: not running (../shared/conformance/peers.sh starts it); no ratio")
		return nil
	}
	var bkLater []float64
	bkCache := host + "/fleet/bkcache:main"
	for i := 1; i <= c.runners; i++ {
		if err := c.commit(i); err != nil {
			return err
		}
		r, err := buildkitRunner(ctx, c, proxy, base, bkCache, host+"/fleet/bkapp:latest", fmt.Sprintf("buildkit-%d", i))
		if err != nil {
			return err
		}
		r.print(fmt.Sprintf("BuildKit runner %d", i))
		if i > 1 {
			bkLater = append(bkLater, r.seconds)
		}
	}
	k, b := sum(kilnLater), sum(bkLater)
	if b > 0 {
		fmt.Printf("runners 2–%d: kiln %.2f s, BuildKit %.2f s: %.2f× (target ≤0.3×)\n", c.runners, k, b, k/b)
	}
	return nil
}

// commit makes runner i's version of the context.
func (c config) commit(i int) error {
	if c.change == "" {
		return nil
	}
	body := fmt.Sprintf("commit %d\n", i)
	if strings.HasSuffix(c.change, ".go") {
		body = commitGo(i)
	}
	return os.WriteFile(filepath.Join(c.context, c.change), []byte(body), 0o644)
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

type runnerResult struct {
	seconds  float64
	down, up int64
	steps    int
	// mirror is what the apt repository and module proxy served.
	mirror int64
	// cpu is the user and system time of the build command and the
	// processes it waited for (kiln's RUN steps; not buildkitd's work).
	cpu float64
}

// showMirror adds the mirror column: the workload has servers of its own.
var showMirror bool

func (r runnerResult) print(label string) {
	fmt.Printf("%-28s %9.2f %12.2f %12.2f %6d", label, r.seconds, float64(r.down)/1e6, float64(r.up)/1e6, r.steps)
	if showMirror {
		fmt.Printf(" %12.2f", float64(r.mirror)/1e6)
	}
	fmt.Printf(" %8.2f\n", r.cpu)
}

// kilnRunner builds on an empty store. mounts=true carries the cache
// mounts from runner to runner (BuildKit has no equivalent: its runners
// start with empty ones).
func kilnRunner(ctx context.Context, c config, p *countingProxy, root, base, cacheRef, imageRef, logName string) (runnerResult, error) {
	args := []string{"build", "--root", root, "--progress=plain", "-f", c.dockerfile,
		"--build-arg", "BASE=" + base,
		"--cache-from", "type=registry,ref=" + cacheRef,
		"--cache-to", "type=registry,ref=" + cacheRef + ",mode=max,mounts=true",
		"-t", imageRef, "--push",
		// where each runner's time went, for ui.perfetto.dev
		"--trace", filepath.Join(c.work, "traces", logName+".json")}
	for _, a := range c.buildArgs {
		args = append(args, "--build-arg", a)
	}
	if c.hostNet {
		args = append(args, "--network=host", "--allow", "network.host")
	}
	args = append(args, c.context)
	return measure(ctx, p, filepath.Join(c.work, "logs", logName+".log"), countKilnSteps, c.kiln, args...)
}

func buildkitRunner(ctx context.Context, c config, p *countingProxy, base, cacheRef, imageRef, logName string) (runnerResult, error) {
	// A fresh runner: nothing of the previous builds in BuildKit's state.
	if out, err := exec.CommandContext(ctx, c.buildctl, "--addr", c.buildkitAddr, "prune", "--all").CombinedOutput(); err != nil {
		return runnerResult{}, fmt.Errorf("buildctl prune: %v\n%s", err, out)
	}
	args := []string{"--addr", c.buildkitAddr, "build", "--progress=plain",
		"--frontend", "dockerfile.v0",
		"--local", "context=" + c.context, "--local", "dockerfile=" + filepath.Dir(c.dockerfile),
		"--opt", "filename=" + filepath.Base(c.dockerfile),
		"--opt", "build-arg:BASE=" + base,
		"--import-cache", "type=registry,ref=" + cacheRef + ",registry.insecure=true",
		"--export-cache", "type=registry,ref=" + cacheRef + ",mode=max,registry.insecure=true",
		"--output", "type=image,name=" + imageRef + ",push=true,registry.insecure=true"}
	for _, a := range c.buildArgs {
		args = append(args, "--opt", "build-arg:"+a)
	}
	// c.hostNet needs nothing here: peers.sh's buildkitd runs its worker
	// with networkMode = "host", so RUN steps reach 127.0.0.1 already
	// (asking for it with --allow network.host would need the daemon's
	// --allow-insecure-entitlement network.host).
	return measure(ctx, p, filepath.Join(c.work, "logs", logName+".log"), countBuildkitSteps, c.buildctl, args...)
}

func measure(ctx context.Context, p *countingProxy, logPath string, steps func(string) int, bin string, args ...string) (runnerResult, error) {
	// Every runner starts with nothing left to write back from the one
	// before (a runner is its own machine in a real fleet): kiln leaves
	// its last sync to a detached process, and its writeback must not
	// land in the next runner's time, nor in BuildKit's.
	syscall.Sync()
	p.reset()
	mirrorBytes.Store(0)
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	os.WriteFile(logPath, out, 0o644)
	if err != nil {
		return runnerResult{}, fmt.Errorf("%s %s: %v (log %s)\n%s", bin, strings.Join(args, " "), err, logPath, tail(string(out), 30))
	}
	return runnerResult{seconds: elapsed.Seconds(), down: p.down.Load(), up: p.up.Load(), steps: steps(string(out)), mirror: mirrorBytes.Load(),
		cpu: (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()}, nil
}

var stepHeader = regexp.MustCompile(`(?m)^#(\d+) \[[^\]]*\] (RUN|COPY|ADD|WORKDIR)\b`)

// countKilnSteps counts the steps a kiln build ran: step headers whose
// number never reads CACHED.
func countKilnSteps(log string) int { return countSteps(log) }

// countBuildkitSteps is the same on BuildKit's plain progress, which kiln's
// copies.
func countBuildkitSteps(log string) int { return countSteps(log) }

func countSteps(log string) int {
	cached := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#(\d+) CACHED`).FindAllStringSubmatch(log, -1) {
		cached[m[1]] = true
	}
	seen := map[string]bool{}
	n := 0
	for _, m := range stepHeader.FindAllStringSubmatch(log, -1) {
		if seen[m[1]] || cached[m[1]] {
			continue
		}
		seen[m[1]] = true
		n++
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// countingProxy forwards to the registry and counts blob bytes: what
// clients download (GET of blobs) and upload (bodies of PATCH/PUT/POST).
type countingProxy struct {
	host     string
	down, up atomic.Int64
}

func (p *countingProxy) reset() { p.down.Store(0); p.up.Store(0) }

func startCountingProxy(target string) (*countingProxy, error) {
	u, err := url.Parse("http://" + target)
	if err != nil {
		return nil, err
	}
	p := &countingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &countingReader{ReadCloser: resp.Body, n: &p.down}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.host = l.Addr().String()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && (r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodPost) && strings.Contains(r.URL.Path, "/blobs/") {
			r.Body = &countingReader{ReadCloser: r.Body, n: &p.up}
		}
		rp.ServeHTTP(w, r)
	}))
	return p, nil
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// startRegistry runs Debian's docker-registry on a free loopback port.
func startRegistry(ctx context.Context, work string) (string, func(), error) {
	const bin = "/usr/bin/docker-registry"
	if _, err := os.Stat(bin); err != nil {
		return "", nil, fmt.Errorf("needs Debian's docker-registry: apt-get install docker-registry")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	host := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: kiln-fleet\n",
		filepath.Join(work, "registry"), host)
	cfgPath := filepath.Join(work, "registry.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return "", nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(cctx, bin, "serve", cfgPath)
	logf, err := os.Create(filepath.Join(work, "logs", "registry.log"))
	if err != nil {
		cancel()
		return "", nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		return "", nil, err
	}
	stop := func() { cancel(); cmd.Wait(); logf.Close() }
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			return host, stop, nil
		}
	}
	stop()
	return "", nil, fmt.Errorf("docker-registry did not answer on %s", host)
}

// pushBase pushes the base straight to the registry, past the proxy (the
// base is the fleet's, not a runner's) and returns its repository:tag.
// busybox is the test base (Debian's busybox-static); debian is a bookworm
// minbase made by debootstrap once and cached under KILN_TEST_CACHE.
func pushBase(ctx context.Context, host, which string) (string, error) {
	var img v1.Image
	var err error
	repo := "library/busybox:latest"
	if which == "debian" {
		repo = "library/debian:bookworm"
		img, err = testutil.NewDebianImage(ctx, testutil.CacheDir())
	} else {
		img, err = testutil.NewBusyboxImage()
	}
	if err != nil {
		return "", fmt.Errorf("making the %s base (debian needs debootstrap, root and Debian's archive once): %w", which, err)
	}
	ref := host + "/" + repo
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	return repo, nil
}

// digestOf is the manifest digest ref names now ("" when none).
func digestOf(ref string) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(r)
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// clearWork empties the work directory of the last run's stores: into
// trash when set, else removed. Set aside for a caller to remove later
// because on an ext4 without a journal, inodes allocated in the minutes
// after a mass delete skip every recently freed one in their block group
// (ext4's recently_deleted check): the first runners measured would pay
// for the deletion, which no fresh runner does.
func (c *config) clearWork(trash string) error {
	if trash == "" {
		return os.RemoveAll(c.work)
	}
	if _, err := os.Lstat(c.work); err != nil {
		return nil
	}
	if err := os.MkdirAll(trash, 0o755); err != nil {
		return err
	}
	aside, err := os.MkdirTemp(trash, "fleet-")
	if err != nil {
		return err
	}
	return os.Rename(c.work, filepath.Join(aside, "work"))
}
