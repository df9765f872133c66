package main

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kiln-build/kiln/internal/conformance"
	"github.com/kiln-build/kiln/internal/testutil"
)

const rerunDockerfile = `FROM {{BASE}}
ARG A=1
COPY src/ /src/
RUN echo one > /one
ENV E=1
RUN echo two > /two
RUN true
WORKDIR /tmp
FROM {{BASE}} AS final
COPY --from=0 /src /copied
RUN echo three > /three
`

var stepLine = regexp.MustCompile(`^#(\d+) \[[^\]]*\] (.*)$`)

// firstRerun returns the first step of a plain-progress log that ran
// rather than hit the cache, FROM lines aside; "" when every step hit.
func firstRerun(log string) string {
	names := map[string]string{}
	var order []string
	cached := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		l := sc.Text()
		if m := stepLine.FindStringSubmatch(l); m != nil {
			names[m[1]] = m[2]
			order = append(order, m[1])
			continue
		}
		if strings.HasPrefix(l, "#") && strings.HasSuffix(l, " CACHED") {
			cached[strings.Fields(l)[0][1:]] = true
		}
	}
	for _, n := range order {
		if !cached[n] && !strings.HasPrefix(names[n], "FROM ") {
			return names[n]
		}
	}
	return ""
}

// TestRerunAfterChange checks, for each kind of change, which step is the
// first to run again on the rebuild.
func TestRerunAfterChange(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	tests := []struct {
		name   string
		change func(t *testing.T, dir, base string) []string // returns extra build flags
		want   string
	}{
		{"nothing", func(t *testing.T, dir, base string) []string { return nil }, ""},
		{"content", func(t *testing.T, dir, base string) []string {
			writeFile(t, filepath.Join(dir, "src/a.txt"), "changed\n")
			return nil
		}, "COPY src/ /src/"},
		{"mode", func(t *testing.T, dir, base string) []string {
			must(t, os.Chmod(filepath.Join(dir, "src/a.txt"), 0o600))
			return nil
		}, "COPY src/ /src/"},
		{"owner", func(t *testing.T, dir, base string) []string {
			must(t, os.Chown(filepath.Join(dir, "src/a.txt"), 1000, 1000))
			return nil
		}, "COPY src/ /src/"},
		{"mtime only", func(t *testing.T, dir, base string) []string {
			future := time.Now().Add(time.Hour)
			must(t, os.Chtimes(filepath.Join(dir, "src/a.txt"), future, future))
			return nil
		}, ""},
		{"ignored file", func(t *testing.T, dir, base string) []string {
			writeFile(t, filepath.Join(dir, "src/debug.log"), "noise\n")
			return nil
		}, ""},
		{"file no COPY selects", func(t *testing.T, dir, base string) []string {
			writeFile(t, filepath.Join(dir, "notes.md"), "elsewhere\n")
			return nil
		}, ""},
		{"build arg", func(t *testing.T, dir, base string) []string {
			return []string{"--build-arg", "A=2"}
		}, "RUN echo one > /one"},
		{"env", func(t *testing.T, dir, base string) []string {
			df := strings.Replace(rerunDockerfile, "ENV E=1", "ENV E=2", 1)
			writeFile(t, filepath.Join(dir, "Dockerfile"), strings.ReplaceAll(df, "{{BASE}}", base))
			return nil
		}, "RUN echo two > /two"},
		{"base moved tag", func(t *testing.T, dir, base string) []string {
			img, err := mutate.Config(testutil.BusyboxImage(t), mutateEnv("MOVED=1"))
			must(t, err)
			testutil.Push(t, img, base)
			return nil
		}, "COPY src/ /src/"},
		{"later stage edited", func(t *testing.T, dir, base string) []string {
			df := strings.Replace(rerunDockerfile, "echo three", "echo four", 1)
			writeFile(t, filepath.Join(dir, "Dockerfile"), strings.ReplaceAll(df, "{{BASE}}", base))
			return nil
		}, "RUN echo four > /three"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := fmt.Sprintf("%s/test/rerun%d:latest", reg, i)
			testutil.Push(t, testutil.BusyboxImage(t), base)
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "Dockerfile"), strings.ReplaceAll(rerunDockerfile, "{{BASE}}", base))
			writeFile(t, filepath.Join(dir, ".dockerignore"), "src/*.log\n")
			writeFile(t, filepath.Join(dir, "src/a.txt"), "a\n")
			writeFile(t, filepath.Join(dir, "src/b.txt"), "b\n")
			root := t.TempDir()
			if log, code := kiln(t, "build", "--root", root, "--progress=plain", dir); code != 0 {
				t.Fatalf("first build: exit %d\n%s", code, log)
			}
			extra := tt.change(t, dir, base)
			args := append([]string{"build", "--root", root, "--progress=plain"}, extra...)
			log, code := kiln(t, append(args, dir)...)
			if code != 0 {
				t.Fatalf("rebuild: exit %d\n%s", code, log)
			}
			if got := firstRerun(log); got != tt.want {
				t.Errorf("first step to rerun: %q, want %q\n%s", got, tt.want, log)
			}
		})
	}
}

// TestKilledBuilds kills builds at random moments; a normal build on the
// same store then succeeds and gives the image a fresh store gives.
func TestKilledBuilds(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	dir := t.TempDir()
	base := reg + "/library/busybox:latest"
	writeFile(t, filepath.Join(dir, "Dockerfile"), fmt.Sprintf(`FROM %s
COPY ctx/ /ctx/
RUN for i in $(seq 1 200); do echo $i > /f$i; done
RUN dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null
WORKDIR /w
RUN echo done > /done
`, base))
	for i := 0; i < 300; i++ {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("ctx/d%d/file%d.txt", i%10, i)), strings.Repeat("x", i*10))
	}
	root := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	kills := 20
	if testing.Short() {
		kills = 5
	}
	for i := 0; i < kills; i++ {
		cmd := exec.Command(kilnBin, "build", "--root", root, "--progress=plain", "--no-cache", dir)
		must(t, cmd.Start())
		time.Sleep(time.Duration(rng.Intn(600)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		// what the killed build ran keeps running no longer than its sandbox
		waitNoProcess(t, root)
	}
	out := filepath.Join(t.TempDir(), "after.tar")
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "-o", "type=docker,dest="+out, dir); code != 0 {
		t.Fatalf("build after %d kills: exit %d\n%s", kills, code, log)
	}
	fresh := filepath.Join(t.TempDir(), "fresh.tar")
	if log, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-o", "type=docker,dest="+fresh, dir); code != 0 {
		t.Fatalf("fresh build: exit %d\n%s", code, log)
	}
	sameImage(t, out, fresh)
}

// TestConcurrentBuilds runs 8 builds on one store at once.
func TestConcurrentBuilds(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	base := reg + "/library/busybox:latest"
	var wg sync.WaitGroup
	errs := make([]string, 8)
	outs := make([]string, 8)
	for i := 0; i < 8; i++ {
		dir := t.TempDir()
		// half the builds are identical, half differ: shared and distinct steps
		writeFile(t, filepath.Join(dir, "Dockerfile"), fmt.Sprintf("FROM %s\nCOPY f /f\nRUN echo %d > /n && cat /f >> /n\nRUN echo shared > /s\n", base, i%2))
		writeFile(t, filepath.Join(dir, "f"), "same\n")
		outs[i] = filepath.Join(t.TempDir(), "img.tar")
		wg.Add(1)
		go func(i int, dir string) {
			defer wg.Done()
			cmd := exec.Command(kilnBin, "build", "--root", root, "--progress=plain", "-o", "type=docker,dest="+outs[i], dir)
			if b, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Sprintf("build %d: %v\n%s", i, err, b)
			}
		}(i, dir)
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
	if t.Failed() {
		return
	}
	sameImage(t, outs[0], outs[2])
	sameImage(t, outs[1], outs[3])
	checkNoLeaks(t, root)
}

// sameImage compares two docker archives the way conformance does.
func sameImage(t *testing.T, a, b string) {
	t.Helper()
	ia, err := tarball.ImageFromPath(a, nil)
	must(t, err)
	ib, err := tarball.ImageFromPath(b, nil)
	must(t, err)
	fa, err := conformance.Flatten(ia)
	must(t, err)
	fb, err := conformance.Flatten(ib)
	must(t, err)
	if d := conformance.Delta(fa, fb); len(d) > 0 {
		t.Errorf("%s and %s differ:\n%s", filepath.Base(a), filepath.Base(b), strings.Join(d, "\n"))
	}
	ca, err := conformance.Config(ia)
	must(t, err)
	cb, err := conformance.Config(ib)
	must(t, err)
	if ca != cb {
		t.Errorf("configs differ:\n%s\n%s", ca, cb)
	}
}

// waitNoProcess waits until no process mentions root (a killed kiln's
// sandbox dies with it through PDEATHSIG; give the kernel a moment).
func waitNoProcess(t *testing.T, root string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		left := ""
		for _, p := range procs {
			if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), root) {
				left = strings.ReplaceAll(string(b), "\x00", " ")
			}
		}
		if left == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process outlived its killed build: %s", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(s), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mutateEnv(kv string) v1.Config {
	return v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", kv}, Cmd: []string{"sh"}}
}

// compression= re-encodes the layers of an output; the image stays valid
// and a second export reuses the stored variant.
func TestCompressionOutputs(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Dockerfile"), "FROM "+reg+"/library/busybox:latest\nRUN echo hi > /hi\n")
	root := t.TempDir()
	for _, tc := range []struct{ spec, mt string }{
		{"compression=zstd", "application/vnd.oci.image.layer.v1.tar+zstd"},
		{"compression=zstd,compression-level=19", "application/vnd.oci.image.layer.v1.tar+zstd"},
		{"compression=uncompressed", "application/vnd.oci.image.layer.v1.tar"},
		{"compression=gzip,compression-level=9", "application/vnd.oci.image.layer.v1.tar+gzip"},
	} {
		out := filepath.Join(t.TempDir(), "layout")
		if log, code := kiln(t, "build", "--root", root, "--progress=plain", "-o", "type=oci,tar=false,dest="+out+","+tc.spec, dir); code != 0 {
			t.Fatalf("%s: exit %d\n%s", tc.spec, code, log)
		}
		img, err := firstImage(out)
		must(t, err)
		// go-containerregistry's full validation gunzips every layer; for
		// other encodings check the structure, then the diffIDs ourselves
		var opts []validate.Option
		if !strings.HasSuffix(tc.mt, "gzip") {
			opts = append(opts, validate.Fast)
		}
		if err := validate.Image(img, opts...); err != nil {
			t.Errorf("%s: %v", tc.spec, err)
		}
		ls, err := img.Layers()
		must(t, err)
		for _, l := range ls {
			want, err := l.DiffID()
			must(t, err)
			rc, err := l.Uncompressed()
			must(t, err)
			got, _, err := v1.SHA256(rc)
			rc.Close()
			must(t, err)
			if got != want {
				t.Errorf("%s: layer uncompresses to %s, want diffID %s", tc.spec, got, want)
			}
		}
		m, err := img.Manifest()
		must(t, err)
		for _, l := range m.Layers {
			if string(l.MediaType) != tc.mt {
				t.Errorf("%s: layer media type %s, want %s", tc.spec, l.MediaType, tc.mt)
			}
		}
	}
}

// An archive output that already holds the image is not written again;
// one that was touched since is.
func TestUnchangedOutputNotRewritten(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	dir, root := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(dir, "Dockerfile"), "FROM "+reg+"/library/busybox:latest\nRUN echo hi > /hi\n")
	out := filepath.Join(t.TempDir(), "img.tar")
	build := func() string {
		log, code := kiln(t, "build", "--root", root, "--progress=plain", "-o", "type=oci,dest="+out, dir)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, log)
		}
		return log
	}
	exported := regexp.MustCompile(`(?m)^#(\d+) exporting to oci`)
	cachedExport := func(log string) bool {
		m := exported.FindStringSubmatch(log)
		return m != nil && strings.Contains(log, "#"+m[1]+" CACHED")
	}
	if log := build(); cachedExport(log) {
		t.Fatalf("first export was cached:\n%s", log)
	}
	before, err := os.Stat(out)
	must(t, err)
	if log := build(); !cachedExport(log) {
		t.Errorf("unchanged export was written again:\n%s", log)
	}
	after, err := os.Stat(out)
	must(t, err)
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("the archive was rewritten")
	}
	future := time.Now().Add(time.Minute)
	must(t, os.Chtimes(out, future, future))
	if log := build(); cachedExport(log) {
		t.Errorf("a touched archive was not written again:\n%s", log)
	}
}
