package escape

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/testutil"
)

// kilnBin is the kiln binary under test, built once by TestMain the way
// cmd/kiln's own tests build it.
var kilnBin string

func TestMain(m *testing.M) { testutil.RunWithKiln(m, "../../cmd/kiln", &kilnBin) }

// defaultDeadline bounds a case that names none: far above what any case
// takes, so only a hang reaches it.
const defaultDeadline = 3 * time.Minute

// result is how one kiln command ended.
type result struct {
	out      string
	code     int
	timedOut bool
	maxRSS   int64 // bytes, of kiln and the children it waited for
}

// runKiln runs kiln with a deadline. At the deadline kiln gets SIGTERM (it
// then cleans up and exits), then, if its process group is still there
// 20 s later, SIGKILL: a hang fails the case, never the suite.
func runKiln(t *testing.T, deadline time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, kilnBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	err := cmd.Run()
	r := result{out: out.String(), timedOut: ctx.Err() != nil}
	if r.timedOut && cmd.Process != nil {
		// the group is ours: kiln's pid is its id
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.maxRSS = ru.Maxrss * 1024
		}
	} else if err != nil {
		t.Fatalf("running kiln: %v", err)
	}
	return r
}

// env is what one case's Dockerfile, context and checks refer to.
type env struct {
	canary *testutil.Canary
	ctx    string // the build context
	out    string // a directory for the case's outputs
	root   string // kiln's --root
	base   string // the busybox base, in the test registry
	img    string // the case's crafted base image, when it has layers
}

// expand fills a case's placeholders: {{BASE}} the busybox image, {{IMG}}
// the crafted base, {{CANARY}} the host canary's absolute path,
// {{CANARY_REL}} a relative path reaching it from anywhere, {{OUT}} the
// outputs directory.
func (e *env) expand(s string) string {
	return strings.NewReplacer(
		"{{BASE}}", e.base,
		"{{IMG}}", e.img,
		"{{CANARY_REL}}", e.canary.Rel(),
		"{{CANARY}}", e.canary.Dir,
		"{{OUT}}", e.out,
	).Replace(s)
}

// escCase is one escape attempt. Unless mustFail is set, the build may
// succeed (the attempt was contained) or fail with exit code 1 and an
// ERROR line (refused); either way before the deadline, without a panic,
// with the canary unchanged.
type escCase struct {
	name string
	// class names the escape class, as docs/threat-model.md lists them.
	class      string
	dockerfile string
	// layers are appended to the busybox base to make {{IMG}}.
	layers func(t *testing.T, cv *testutil.Canary) []v1.Layer
	// files are written into the context (after placeholder expansion).
	files map[string]string
	// context adds what files cannot hold: FIFOs, devices, archives.
	context func(t *testing.T, e *env)
	// outputs are -o specs; {{OUT}} is the case's output directory.
	outputs []string
	args    []string
	// root makes a special --root (the decompression bomb's small tmpfs).
	root     func(t *testing.T) string
	deadline time.Duration
	// mustFail: the build must fail, with output matching this.
	mustFail *regexp.Regexp
	// check runs after the build ended before its deadline.
	check func(t *testing.T, e *env, r result)
	// long cases (minutes) are skipped with -short.
	long bool
}

// TestEscape is the escape suite (issue 9): every case tries to change a
// host canary directory through a Dockerfile, a build context or a base
// image, and must leave it exactly as it was.
func TestEscape(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "needs root: builds run RUN steps in namespaces on overlayfs, and crafted layers hold devices and foreign owners")
	}
	reg := testutil.Registry(t)
	base := testutil.PushBusybox(t, reg)
	bb := testutil.BusyboxImage(t)
	for _, c := range escapeCases() {
		t.Run(c.name, func(t *testing.T) {
			if c.long && testing.Short() {
				t.Skip("takes minutes: skipped with -short")
			}
			c.run(t, reg, base, bb)
		})
	}
}

func (c escCase) run(t *testing.T, reg, base string, bb v1.Image) {
	e := &env{canary: testutil.NewCanary(t), ctx: filepath.Join(t.TempDir(), "ctx"), out: t.TempDir(), base: base}
	if c.root != nil {
		e.root = c.root(t)
	} else {
		e.root = t.TempDir()
	}
	if c.layers != nil {
		img := testutil.ImageOn(t, bb, c.layers(t, e.canary)...)
		e.img = testutil.Push(t, img, reg+"/escape/"+slug(c.name)+":latest")
	}
	if err := os.MkdirAll(e.ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range c.files {
		if err := os.WriteFile(filepath.Join(e.ctx, name), []byte(e.expand(body)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if c.context != nil {
		c.context(t, e)
	}
	if err := os.WriteFile(filepath.Join(e.ctx, "Dockerfile"), []byte(e.expand(c.dockerfile)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "--root", e.root, "--progress=plain"}
	for _, o := range c.outputs {
		args = append(args, "-o", e.expand(o))
	}
	for _, a := range c.args {
		args = append(args, e.expand(a))
	}
	args = append(args, e.ctx)
	deadline := c.deadline
	if deadline == 0 {
		deadline = defaultDeadline
	}
	r := runKiln(t, deadline, args...)
	defer e.canary.Check(t)
	defer checkNoMounts(t, e.root)
	if r.code == 0 {
		t.Log("kiln build: built")
	} else if i := strings.LastIndex(r.out, "ERROR:"); i >= 0 {
		line := strings.SplitN(r.out[i:], "\n", 2)[0]
		if len(line) > 400 {
			line = line[:400] + "…"
		}
		t.Logf("kiln build: exit %d, %s", r.code, line)
	}
	if r.timedOut {
		t.Fatalf("kiln build did not end within %v (a hang); killed. Output so far:\n%s", deadline, tail(r.out))
	}
	checkSane(t, r)
	switch {
	case c.mustFail != nil && r.code == 0:
		t.Errorf("kiln build succeeded; want a failure matching %q. Output:\n%s", c.mustFail, tail(r.out))
	case c.mustFail != nil && !c.mustFail.MatchString(r.out):
		t.Errorf("kiln build failed (exit %d) without saying %q:\n%s", r.code, c.mustFail, tail(r.out))
	}
	if c.check != nil {
		c.check(t, e, r)
	}
}

// checkSane fails on a panic, or on a failure that is not a build failure
// with kiln's ERROR report.
func checkSane(t *testing.T, r result) {
	t.Helper()
	if strings.Contains(r.out, "panic:") || strings.Contains(r.out, "goroutine ") {
		t.Errorf("kiln panicked:\n%s", tail(r.out))
	}
	if r.code != 0 && (r.code != 1 || !strings.Contains(r.out, "ERROR:")) {
		t.Errorf("kiln exited %d without a clear build error (want exit 1 and an ERROR line):\n%s", r.code, tail(r.out))
	}
}

// checkNoMounts fails when a mount under root outlived kiln.
func checkNoMounts(t *testing.T, root string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], root+"/") {
			t.Errorf("mount left behind: %s", l)
		}
	}
}

// tail keeps the last 60 lines of a build's output for a failure message.
func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 60 {
		lines = append([]string{"…"}, lines[len(lines)-60:]...)
	}
	return strings.Join(lines, "\n")
}

func slug(s string) string {
	return strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// succeeded fails the case unless the build succeeded: for checks that
// look at what the build wrote.
func succeeded(t *testing.T, r result) bool {
	t.Helper()
	if r.code != 0 {
		t.Logf("build refused (exit %d): nothing exported to check", r.code)
		return false
	}
	return true
}

// owned sets an entry's owner and mtime: what a swapped-in directory
// would pass on to the host.
func owned(e testutil.TarEntry, uid int, mtime time.Time) testutil.TarEntry {
	e.Hdr.Uid, e.Hdr.Gid, e.Hdr.ModTime = uid, uid, mtime
	return e
}

var past = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

// writeArchive writes entries as a tar into the context.
func writeArchive(t *testing.T, e *env, name string, gz bool, entries ...testutil.TarEntry) {
	t.Helper()
	if err := testutil.WriteTar(filepath.Join(e.ctx, name), gz, func(tw *tar.Writer) error {
		return testutil.WriteEntries(tw, entries)
	}); err != nil {
		t.Fatal(err)
	}
}

func layers(entries func(cv *testutil.Canary) []testutil.TarEntry) func(t *testing.T, cv *testutil.Canary) []v1.Layer {
	return func(t *testing.T, cv *testutil.Canary) []v1.Layer {
		return []v1.Layer{testutil.CraftedLayer(t, entries(cv)...)}
	}
}

// swapDockerfile swaps /a, a directory with changed metadata, for a
// symlink to the canary: a final pass over directories recorded by path
// then lands on the host.
const swapDockerfile = `FROM {{BASE}}
RUN mkdir -p /a/x && chmod 777 /a/x && chown 1234:1234 /a/x && touch -d '2001-01-01 00:00:00' /a/x && echo pwned > /a/file && chmod 666 /a/file && chown 1234:1234 /a/file
RUN rm -rf /a && ln -s %s /a
`

// evilEntries are what an archive or layer writes through a path that
// leads to the canary: a file, the canary's child directory with another
// mode, owner and mtime, and the canary file rewritten.
func evilEntries(prefix string) []testutil.TarEntry {
	return []testutil.TarEntry{
		owned(testutil.Dir(prefix+"x/", 0o777), 1234, past),
		owned(testutil.File(prefix+"file", 0o666, "pwned\n"), 1234, past),
		owned(testutil.File(prefix+"new", 0o666, "pwned\n"), 1234, past),
		owned(testutil.Dir(prefix, 0o777), 1234, past),
	}
}

func escapeCases() []escCase {
	var cases []escCase

	// 1. Symlink swap of a directory between layers, for every output.
	outputs := []struct {
		name   string
		spec   string
		extra  []string
		verify func(t *testing.T, e *env, r result)
	}{
		{name: "local", spec: "type=local,dest={{OUT}}/rootfs"},
		{name: "tar", spec: "type=tar,dest={{OUT}}/rootfs.tar"},
		{name: "oci", spec: "type=oci,dest={{OUT}}/image.tar", verify: inspectOutput("image.tar")},
		{name: "oci layout", spec: "type=oci,dest={{OUT}}/layout,tar=false", verify: inspectOutput("layout")},
		{name: "docker", spec: "type=docker,dest={{OUT}}/image.tar", extra: []string{"-t", "escape/swap:1"}, verify: loadOutput("image.tar")},
	}
	for _, o := range outputs {
		cases = append(cases, escCase{
			name:       "swap dir for symlink between layers - " + o.name + " output",
			class:      "symlink swap between layers (export)",
			dockerfile: fmt.Sprintf(swapDockerfile, "{{CANARY}}"),
			outputs:    []string{o.spec},
			args:       o.extra,
			check:      o.verify,
		})
	}
	cases = append(cases, escCase{
		name:       "swap dir for relative symlink between layers - local output",
		class:      "symlink swap between layers (export)",
		dockerfile: fmt.Sprintf(swapDockerfile, "{{CANARY_REL}}"),
		outputs:    []string{"type=local,dest={{OUT}}/rootfs"},
	})
	// The same swap done by base-image layers, applied by the unpacker and
	// the flattening export: layer 1 makes /a a symlink, layer 2 writes
	// a/x, a/file through it.
	for _, link := range []string{"abs", "rel"} {
		cases = append(cases, escCase{
			name:  "base layer writes through symlink of previous layer - " + link,
			class: "symlink swap between layers (unpack)",
			layers: func(t *testing.T, cv *testutil.Canary) []v1.Layer {
				target := cv.Dir
				if link == "rel" {
					target = cv.Rel()
				}
				return []v1.Layer{
					testutil.CraftedLayer(t, testutil.Symlink("a", target)),
					testutil.CraftedLayer(t, evilEntries("a/")...),
				}
			},
			dockerfile: "FROM {{IMG}}\nRUN ls -la /a/ || true\n",
			outputs:    []string{"type=local,dest={{OUT}}/rootfs"},
		})
	}

	// 2. ADD of a local archive through symlinks.
	cases = append(cases,
		escCase{
			name:       "ADD archive into symlink made by RUN",
			class:      "symlink swap (ADD archive)",
			dockerfile: "FROM {{BASE}}\nRUN ln -s {{CANARY}} /d\nADD evil.tar /d/\n",
			context: func(t *testing.T, e *env) {
				writeArchive(t, e, "evil.tar", false, evilEntries("")...)
			},
			outputs: []string{"type=local,dest={{OUT}}/rootfs"},
			check: func(t *testing.T, e *env, r result) {
				if succeeded(t, r) {
					mustExist(t, filepath.Join(e.out, "rootfs", e.canary.Dir, "new"))
				}
			},
		},
		escCase{
			name:       "ADD archive with d-dotdot-dotdot names into symlink made by RUN",
			class:      "symlink swap (ADD archive)",
			dockerfile: "FROM {{BASE}}\nRUN ln -s {{CANARY}} /d\nADD evil.tar /d/\n",
			context: func(t *testing.T, e *env) {
				writeArchive(t, e, "evil.tar", false,
					testutil.Dir("d/", 0o755),
					owned(testutil.File("d/../../new", 0o666, "pwned\n"), 1234, past),
					owned(testutil.Dir("d/../../x/", 0o777), 1234, past),
					owned(testutil.File("d/../../../../../../../../../.."+e.canary.Dir+"/new2", 0o666, "pwned\n"), 1234, past),
				)
			},
			outputs: []string{"type=local,dest={{OUT}}/rootfs"},
		},
	)
	for _, link := range []string{"abs", "rel"} {
		cases = append(cases, escCase{
			name:       "ADD archive whose symlink entry is written through - " + link,
			class:      "symlink swap (ADD archive)",
			dockerfile: "FROM {{BASE}}\nADD evil.tar /dst/\n",
			context: func(t *testing.T, e *env) {
				target := e.canary.Dir
				if link == "rel" {
					target = e.canary.Rel()
				}
				writeArchive(t, e, "evil.tar", false, append([]testutil.TarEntry{testutil.Symlink("l", target)}, evilEntries("l/")...)...)
			},
			outputs: []string{"type=local,dest={{OUT}}/rootfs"},
		})
	}
	cases = append(cases, escCase{
		// A directory entry, then the same name as a symlink: the final
		// directory-times pass must not follow it.
		name:       "ADD archive swaps a directory for a symlink",
		class:      "symlink swap (ADD archive)",
		dockerfile: "FROM {{BASE}}\nADD evil.tar /dst/\n",
		context: func(t *testing.T, e *env) {
			writeArchive(t, e, "evil.tar", false,
				testutil.Dir("a/", 0o755),
				owned(testutil.Dir("a/x/", 0o777), 1234, past),
				owned(testutil.File("a/file", 0o666, "pwned\n"), 1234, past),
				testutil.Symlink("a", e.canary.Dir),
			)
		},
		outputs: []string{"type=local,dest={{OUT}}/rootfs"},
	})

	// 3. Hardlinks to outside.
	for _, hl := range []struct{ name, link string }{
		{"relative", "{{REL}}/file"},
		{"absolute", "{{ABS}}/file"},
	} {
		link := func(cv *testutil.Canary) string {
			return strings.NewReplacer("{{REL}}", "../../../../../../../../../.."+cv.Dir, "{{ABS}}", cv.Dir).Replace(hl.link)
		}
		cases = append(cases,
			escCase{
				name:  "hardlink to outside in base layer - " + hl.name,
				class: "hardlink to outside (layer)",
				layers: func(t *testing.T, cv *testutil.Canary) []v1.Layer {
					return []v1.Layer{
						testutil.CraftedLayer(t, testutil.Hardlink("evil", link(cv))),
						testutil.CraftedLayer(t, owned(testutil.File("evil", 0o777, "pwned\n"), 1234, past)),
					}
				},
				dockerfile: "FROM {{IMG}}\nRUN cat /evil; echo pwned >> /evil; chmod 777 /evil || true\n",
				outputs:    []string{"type=local,dest={{OUT}}/rootfs"},
			},
			escCase{
				name:       "hardlink to outside in ADD archive - " + hl.name,
				class:      "hardlink to outside (ADD archive)",
				dockerfile: "FROM {{BASE}}\nADD evil.tar /dst/\nRUN cat /dst/evil; echo pwned >> /dst/evil || true\n",
				context: func(t *testing.T, e *env) {
					writeArchive(t, e, "evil.tar", false,
						testutil.Hardlink("evil", link(e.canary)),
						owned(testutil.File("evil", 0o777, "pwned\n"), 1234, past),
					)
				},
				outputs: []string{"type=local,dest={{OUT}}/rootfs"},
			},
		)
	}

	// 4. ".." and absolute names in tars, one entry kind per case so that
	// refusing the first cannot hide the next.
	up := func(cv *testutil.Canary) string { return "../../../../../../../../../.." + cv.Dir }
	cases = append(cases, tarCases(".. and absolute names", []tarVariant{
		{".. file name", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{owned(testutil.File(up(cv)+"/new", 0o666, "pwned\n"), 1234, past)}
		}},
		{".. name of the canary file", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{owned(testutil.File(up(cv)+"/file", 0o666, "pwned\n"), 1234, past)}
		}},
		{".. dir name", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{owned(testutil.Dir(up(cv)+"/x/", 0o777), 1234, past), owned(testutil.Dir(up(cv)+"/", 0o777), 1234, past)}
		}},
		{"dir-dotdot-dotdot names", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{testutil.Dir("d/", 0o755), owned(testutil.File("d/../"+up(cv)+"/new", 0o666, "pwned\n"), 1234, past)}
		}},
		{"absolute file name", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{owned(testutil.File(cv.Dir+"/new", 0o666, "pwned\n"), 1234, past), owned(testutil.File(cv.Dir+"/file", 0o666, "pwned\n"), 1234, past)}
		}},
		{"absolute dir name", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{owned(testutil.Dir(cv.Dir+"/x/", 0o777), 1234, past), owned(testutil.Dir(cv.Dir+"/", 0o777), 1234, past)}
		}},
	})...)

	// 5. Symlinks as COPY / ADD / WORKDIR / RUN --mount targets.
	// land: what the steps write, found under the canary's path inside
	// the exported root filesystem when the build succeeds.
	targets := []struct {
		name, steps string
		land        []string
	}{
		{"COPY", "COPY f /t/\nCOPY --chown=1234:1234 f /t/sub/deeper/f2\n", []string{"f", "sub/deeper/f2"}},
		{"ADD", "ADD f /t/\n", []string{"f"}},
		{"WORKDIR", "USER 1234:1234\nWORKDIR /t/sub\nWORKDIR /t/x/sub\n", []string{"sub", "x/sub"}},
		{"RUN bind mount", "RUN --mount=type=bind,target=/t/m true\n", nil},
		{"RUN cache mount", "RUN --mount=type=cache,target=/t/c touch /t/c/f\n", nil},
		{"RUN tmpfs mount", "RUN --mount=type=tmpfs,target=/t/tmp true\n", nil},
		{"RUN secret mount", "RUN --mount=type=secret,id=s,target=/t/s cat /t/s\n", nil},
	}
	for _, link := range []string{"absolute", "relative"} {
		for _, tg := range targets {
			target := "{{CANARY}}"
			if link == "relative" {
				target = "{{CANARY_REL}}"
			}
			cases = append(cases, escCase{
				name:       link + " symlink as " + tg.name + " target",
				class:      "symlink as COPY/ADD/WORKDIR/mount target",
				dockerfile: "FROM {{BASE}}\nRUN ln -s " + target + " /t\n" + tg.steps + "RUN ls -la /t/ || true\n",
				files:      map[string]string{"f": "pwned\n"},
				args:       []string{"--secret", "id=s,src={{OUT}}/secret"},
				context: func(t *testing.T, e *env) {
					if err := os.WriteFile(filepath.Join(e.out, "secret"), []byte("s3cret\n"), 0o600); err != nil {
						t.Fatal(err)
					}
				},
				outputs: []string{"type=local,dest={{OUT}}/rootfs"},
				check: func(t *testing.T, e *env, r result) {
					if len(tg.land) == 0 || !succeeded(t, r) {
						return
					}
					for _, l := range tg.land {
						mustExist(t, filepath.Join(e.out, "rootfs", e.canary.Dir, l))
					}
				},
			})
		}
	}

	// 5b. Symlinks as COPY sources and mount sources: reading (or, for a
	// rw bind mount, writing) the host through them. The image must not
	// hold the canary's content.
	stage := "FROM {{BASE}} AS s\nRUN ln -s {{CANARY}} /l && ln -s {{CANARY_REL}} /r\n"
	poke := " sh -c 'cat /m/file > /leak-$RANDOM; echo pwned > /m/file; touch /m/new; chmod 777 /m/x' || true\n"
	linkCtx := func(t *testing.T, e *env) {
		for name, target := range map[string]string{"link": e.canary.Dir, "rlink": e.canary.Rel()} {
			if err := os.Symlink(target, filepath.Join(e.ctx, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// {{L}} is the link: link/rlink in the context, /l or /r in stage s.
	for _, sc := range []struct {
		name, dockerfile string
		context          func(t *testing.T, e *env)
		links            [2]string
	}{
		{"context symlink as COPY source", "FROM {{BASE}}\nCOPY {{L}}/ /c1/\n", linkCtx, [2]string{"link", "rlink"}},
		{"context symlink as COPY source file", "FROM {{BASE}}\nCOPY {{L}}/file /c1\n", linkCtx, [2]string{"link", "rlink"}},
		{"context symlink as ADD source", "FROM {{BASE}}\nADD {{L}}/ /c1/\nADD {{L}}/file /c2\n", linkCtx, [2]string{"link", "rlink"}},
		{"stage symlink as COPY --from source", stage + "FROM {{BASE}}\nCOPY --from=s {{L}}/ /c1/\n", nil, [2]string{"/l", "/r"}},
		{"stage symlink as COPY --from source file", stage + "FROM {{BASE}}\nCOPY --from=s {{L}}/file /c1\n", nil, [2]string{"/l", "/r"}},
		{"context symlink as rw bind mount source", "FROM {{BASE}}\nRUN --mount=type=bind,source={{L}},target=/m,rw" + poke, linkCtx, [2]string{"link", "rlink"}},
		{"stage symlink as rw bind mount source", stage + "FROM {{BASE}}\nRUN --mount=type=bind,from=s,source={{L}},target=/m,rw" + poke, nil, [2]string{"/l", "/r"}},
	} {
		for i, kind := range []string{"absolute", "relative"} {
			cases = append(cases, escCase{
				name:       sc.name + " - " + kind,
				class:      "symlink as COPY/ADD/mount source",
				dockerfile: strings.ReplaceAll(sc.dockerfile, "{{L}}", sc.links[i]),
				context:    sc.context,
				outputs:    []string{"type=local,dest={{OUT}}/rootfs"},
				check:      noLeak,
			})
		}
	}
	cases = append(cases, escCase{
		name:       "cache mount source climbing out",
		class:      "symlink as COPY/ADD/mount source",
		dockerfile: "FROM {{BASE}}\nRUN --mount=type=cache,id=c,source=../../../../../../../../../..{{CANARY}},target=/m" + poke,
		outputs:    []string{"type=local,dest={{OUT}}/rootfs"},
		check:      noLeak,
	})

	// 6. Devices and FIFOs in base layers and in the context.
	cases = append(cases,
		escCase{
			name:       "FIFO in the context - COPY",
			class:      "FIFO in the context",
			dockerfile: "FROM {{BASE}}\nCOPY fifo /fifo\nCOPY . /ctx/\n",
			context:    mkfifo("fifo"),
			outputs:    []string{"type=local,dest={{OUT}}/rootfs"},
			deadline:   60 * time.Second,
		},
		escCase{
			name:       "FIFO in the context - ADD",
			class:      "FIFO in the context",
			dockerfile: "FROM {{BASE}}\nADD fifo /fifo\n",
			context:    mkfifo("fifo"),
			deadline:   60 * time.Second,
		},
		escCase{
			name:       "char device in the context - COPY and ADD",
			class:      "device node in the context",
			dockerfile: "FROM {{BASE}}\nCOPY zero /zero\nADD zero /zero2\n",
			context:    mknod("zero", unix.S_IFCHR|0o666, 1, 5),
			deadline:   60 * time.Second,
		},
		escCase{
			name:  "FIFO in base layer",
			class: "FIFO in a layer",
			layers: layers(func(cv *testutil.Canary) []testutil.TarEntry {
				return []testutil.TarEntry{testutil.Fifo("pipe")}
			}),
			dockerfile: "FROM {{IMG}} AS src\nFROM {{IMG}}\nRUN test -p /pipe\nCOPY --from=src /pipe /pipe2\nADD pipe /pipe3\n",
			context:    mkfifo("pipe"),
			outputs:    []string{"type=local,dest={{OUT}}/rootfs", "type=tar,dest={{OUT}}/rootfs.tar"},
			deadline:   60 * time.Second,
		},
		escCase{
			// Devices outside the sandbox's allow-list (/dev/zero and
			// the like are harmless and allowed, as in Docker): the
			// host's root disk, /dev/kmsg, /dev/mem. Each must read
			// nothing: applied as a file, or refused.
			name:  "char and block devices in base layer",
			class: "device node in a layer",
			layers: func(t *testing.T, cv *testutil.Canary) []v1.Layer {
				var st unix.Stat_t
				if err := unix.Stat("/", &st); err != nil {
					t.Fatal(err)
				}
				return []v1.Layer{testutil.CraftedLayer(t,
					testutil.Block("evildisk", int64(unix.Major(st.Dev)), int64(unix.Minor(st.Dev))),
					testutil.Char("evilkmsg", 1, 11),
					testutil.Char("evilmem", 1, 1),
				)}
			},
			dockerfile: "FROM {{IMG}} AS src\nFROM {{IMG}}\n" +
				"RUN for d in evildisk evilkmsg evilmem; do echo \"$d $(head -c 512 /$d 2>/dev/null | wc -c)\"; done > /result\n" +
				"COPY --from=src /evildisk /copied\n",
			outputs:  []string{"type=local,dest={{OUT}}/rootfs"},
			deadline: 60 * time.Second,
			check: func(t *testing.T, e *env, r result) {
				if !succeeded(t, r) {
					return
				}
				b, err := os.ReadFile(filepath.Join(e.out, "rootfs", "result"))
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("bytes read from each device: %q", b)
				for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
					if f := strings.Fields(l); len(f) != 2 || f[1] != "0" {
						t.Errorf("a device node from a layer opened a host device: %q (want 0 bytes read)", l)
					}
				}
			},
		},
	)

	// 7. A FIFO at /etc/passwd and /etc/group.
	fifoPasswd := layers(func(cv *testutil.Canary) []testutil.TarEntry {
		return []testutil.TarEntry{testutil.Fifo("etc/passwd"), testutil.Fifo("etc/group")}
	})
	for _, fp := range []struct{ name, steps string }{
		{"COPY --chown=name", "COPY --chown=nobody f /f\n"},
		{"COPY --chown=name:group", "COPY --chown=nobody:nogroup f /f\n"},
		{"USER name + WORKDIR", "USER nobody\nWORKDIR /w\n"},
		{"USER name + RUN", "USER nobody\nRUN true\n"},
		{"USER name:group + RUN", "USER nobody:nogroup\nRUN true\n"},
	} {
		cases = append(cases, escCase{
			name:       "FIFO passwd and group - " + fp.name,
			class:      "FIFO /etc/passwd and /etc/group",
			layers:     fifoPasswd,
			dockerfile: "FROM {{IMG}}\n" + fp.steps,
			files:      map[string]string{"f": "x\n"},
			deadline:   60 * time.Second,
		})
	}

	// 8. A million entries.
	cases = append(cases,
		escCase{
			name:       "ADD of a tar with a million entries",
			class:      "a tar with a million entries",
			dockerfile: "FROM {{BASE}}\nADD million.tar.gz /m/\n",
			context: func(t *testing.T, e *env) {
				if err := testutil.WriteTar(filepath.Join(e.ctx, "million.tar.gz"), true, millionEntries); err != nil {
					t.Fatal(err)
				}
			},
			deadline: 15 * time.Minute,
			long:     true,
			check:    boundedMemory,
		},
		escCase{
			name:  "base layer with a million entries",
			class: "a tar with a million entries",
			layers: func(t *testing.T, cv *testutil.Canary) []v1.Layer {
				return []v1.Layer{testutil.StreamedLayer(t, millionEntries)}
			},
			dockerfile: "FROM {{IMG}}\nRUN true\n",
			deadline:   15 * time.Minute,
			long:       true,
			check:      boundedMemory,
		},
	)

	// 9. A decompression bomb in a base layer, into a small --root.
	cases = append(cases, escCase{
		name:  "gzip bomb in base layer into a 64 MiB tmpfs root",
		class: "decompression bomb",
		layers: func(t *testing.T, cv *testutil.Canary) []v1.Layer {
			return []v1.Layer{testutil.StreamedLayer(t, zeros(1<<30))}
		},
		root:       smallTmpfs,
		dockerfile: "FROM {{IMG}}\nRUN true\n",
		deadline:   5 * time.Minute,
		mustFail:   regexp.MustCompile(`(?i)no space|size limit|too large|exceeds`),
		check:      storeStillUsable,
	})

	// 10. Huge xattrs and very long paths.
	withXattrs := func(e testutil.TarEntry, recs map[string]string) testutil.TarEntry {
		e.Hdr.Format = tar.FormatPAX
		e.Hdr.PAXRecords = recs
		return e
	}
	many := map[string]string{}
	for i := 0; i < 500; i++ {
		many[fmt.Sprintf("SCHILY.xattr.user.n%04d", i)] = strings.Repeat("v", 200)
	}
	cases = append(cases, tarCases("huge xattrs", []tarVariant{
		{"a 64 KiB xattr", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{withXattrs(testutil.File("big", 0o644, "x\n"), map[string]string{"SCHILY.xattr.user.big": strings.Repeat("v", 64<<10)})}
		}},
		{"a 100 KiB xattr", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{withXattrs(testutil.File("big", 0o644, "x\n"), map[string]string{"SCHILY.xattr.user.big": strings.Repeat("v", 100<<10)})}
		}},
		{"500 xattrs", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{withXattrs(testutil.File("many", 0o644, "x\n"), many)}
		}},
		{"overlay xattrs", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{withXattrs(testutil.Dir("o/", 0o755), map[string]string{
				"SCHILY.xattr.trusted.overlay.redirect": cv.Dir,
				"SCHILY.xattr.trusted.overlay.opaque":   "y",
				"SCHILY.xattr.trusted.overlay.origin":   "x",
			})}
		}},
	})...)
	deep := "deep"
	for len(deep) < 4200 {
		deep += "/" + strings.Repeat("d", 120)
	}
	cases = append(cases, tarCases("very long paths", []tarVariant{
		{"a 4 KiB deep path", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{testutil.File(deep+"/file", 0o644, "deep\n")}
		}},
		{"a 256-byte name", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{testutil.File(strings.Repeat("n", 256), 0o644, "long name\n")}
		}},
		{"a 255-byte name", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{testutil.File("ok/"+strings.Repeat("n", 255), 0o644, "longest name\n")}
		}},
		{"a 4 KiB symlink target", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{testutil.Symlink("longlink", strings.Repeat("../", 1400)+strings.TrimPrefix(cv.Dir, "/"))}
		}},
		{"a deep path climbing out with ..", func(cv *testutil.Canary) []testutil.TarEntry {
			return []testutil.TarEntry{testutil.File(deep+"/"+strings.Repeat("../", 40)+up(cv)+"/new", 0o644, "pwned\n")}
		}},
	})...)
	return cases
}

// tarVariant is a crafted archive for tarCases.
type tarVariant struct {
	name    string
	entries func(cv *testutil.Canary) []testutil.TarEntry
}

// tarCases makes two cases of each variant: its entries as a base-image
// layer (the store's unpacker, then the flattening exports), and as an
// archive that ADD extracts.
func tarCases(class string, variants []tarVariant) []escCase {
	var cases []escCase
	for _, v := range variants {
		cases = append(cases,
			escCase{
				name:       v.name + " in base layer",
				class:      class + " (layer)",
				layers:     layers(v.entries),
				dockerfile: "FROM {{IMG}} AS src\nFROM {{IMG}}\nRUN true\nCOPY --from=src / /copy/\n",
				outputs:    []string{"type=local,dest={{OUT}}/rootfs", "type=tar,dest={{OUT}}/rootfs.tar"},
			},
			escCase{
				name:       v.name + " in ADD archive",
				class:      class + " (ADD archive)",
				dockerfile: "FROM {{BASE}}\nADD evil.tar /dst/\n",
				context: func(t *testing.T, e *env) {
					writeArchive(t, e, "evil.tar", false, v.entries(e.canary)...)
				},
				outputs: []string{"type=local,dest={{OUT}}/rootfs"},
			},
		)
	}
	return cases
}

// noLeak fails when the exported root filesystem holds the host canary
// file's content: a build read the host.
func noLeak(t *testing.T, e *env, r result) {
	t.Helper()
	if !succeeded(t, r) {
		return
	}
	want, err := os.ReadFile(e.canary.File())
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(e.out, "rootfs")
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, want) {
			t.Errorf("the image holds the host canary's content: %s", strings.TrimPrefix(p, root))
		}
		return nil
	})
}

func mustExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err != nil {
		t.Errorf("the write did not land inside the root filesystem: %v", err)
	}
}

func mkfifo(name string) func(t *testing.T, e *env) {
	return func(t *testing.T, e *env) {
		if err := unix.Mkfifo(filepath.Join(e.ctx, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mknod(name string, mode uint32, major, minor uint32) func(t *testing.T, e *env) {
	return func(t *testing.T, e *env) {
		if err := unix.Mknod(filepath.Join(e.ctx, name), mode, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatal(err)
		}
	}
}

// inspectOutput checks that kiln inspect reads an exported image.
func inspectOutput(name string) func(t *testing.T, e *env, r result) {
	return func(t *testing.T, e *env, r result) {
		if !succeeded(t, r) {
			return
		}
		if ir := runKiln(t, time.Minute, "inspect", filepath.Join(e.out, name)); ir.code != 0 || ir.timedOut {
			t.Errorf("kiln inspect %s: exit %d (timed out: %v)\n%s", name, ir.code, ir.timedOut, tail(ir.out))
		}
	}
}

// loadOutput loads a docker archive back into the store, inspects it, and
// runs a step on it: the swapped layers pass through the store's unpacker.
func loadOutput(name string) func(t *testing.T, e *env, r result) {
	return func(t *testing.T, e *env, r result) {
		if !succeeded(t, r) {
			return
		}
		inspectOutput(name)(t, e, r)
		root := t.TempDir()
		if lr := runKiln(t, time.Minute, "--root", root, "load", "-i", filepath.Join(e.out, name)); lr.code != 0 || lr.timedOut {
			t.Fatalf("kiln load: exit %d (timed out: %v)\n%s", lr.code, lr.timedOut, tail(lr.out))
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM escape/swap:1\nRUN true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		br := runKiln(t, defaultDeadline, "build", "--root", root, "--progress=plain", dir)
		if br.timedOut {
			t.Fatalf("building on the loaded image did not end within %v", defaultDeadline)
		}
		checkSane(t, br)
	}
}

// millionEntries writes 1,000 directories of 1,000 empty files.
func millionEntries(tw *tar.Writer) error {
	for d := 0; d < 1000; d++ {
		dir := fmt.Sprintf("m/%03d/", d)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		for f := 0; f < 1000; f++ {
			h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s%03d", dir, f), Mode: 0o644, Format: tar.FormatUSTAR}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
		}
	}
	return nil
}

// zeros writes one file of n zero bytes: a gzip layer of a few MB.
func zeros(n int64) func(tw *tar.Writer) error {
	return func(tw *tar.Writer) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: n}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, zeroReader{}, n)
		return err
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// boundedMemory fails when kiln's peak memory grew with the archive.
func boundedMemory(t *testing.T, e *env, r result) {
	t.Logf("kiln peak RSS: %d MiB", r.maxRSS>>20)
	if r.maxRSS > 1<<30 {
		t.Errorf("kiln's peak RSS was %d MiB for a million-entry tar: memory must not grow with the entry count", r.maxRSS>>20)
	}
}

// smallTmpfs mounts a 64 MiB tmpfs for the test and returns it.
func smallTmpfs(t *testing.T) string {
	dir := t.TempDir()
	if err := unix.Mount("kiln-escape", dir, "tmpfs", 0, "size=64m,mode=0755"); err != nil {
		t.Fatalf("mounting a small tmpfs for --root: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// storeStillUsable checks that a store that ran out of space is
// consistent: kiln verify (when kiln has it) passes and a normal build in
// it succeeds.
func storeStillUsable(t *testing.T, e *env, r result) {
	vr := runKiln(t, time.Minute, "--root", e.root, "verify")
	switch {
	case strings.Contains(vr.out, "unknown command"):
		t.Log("kiln has no verify command yet: store consistency checked by a build only")
	case vr.timedOut || vr.code != 0:
		t.Errorf("kiln verify after the failed build: exit %d (timed out: %v)\n%s", vr.code, vr.timedOut, tail(vr.out))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+e.base+"\nRUN echo ok > /ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	br := runKiln(t, defaultDeadline, "build", "--root", e.root, "--progress=plain", dir)
	if br.timedOut || br.code != 0 {
		t.Errorf("a normal build in the same --root after the bomb: exit %d (timed out: %v)\n%s", br.code, br.timedOut, tail(br.out))
	}
}
