package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/kiln-build/kiln/progress"
)

// progressContext writes a build context whose Dockerfile is df, with
// REGISTRY replaced by reg, and a greeting.txt, and more files.
func progressContext(t *testing.T, reg, df string, more ...string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"Dockerfile":   strings.ReplaceAll(df, "REGISTRY", reg),
		"greeting.txt": "hello from the context\n",
	}
	for i := 0; i+1 < len(more); i += 2 {
		files[more[i]] = more[i+1]
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// One stage, so that the steps and their numbers come in a fixed order.
const progressDockerfile = `FROM REGISTRY/library/busybox:latest
RUN echo hello from RUN && echo second line
COPY greeting.txt /greeting.txt
RUN cat /greeting.txt
`

const failingDockerfile = `FROM REGISTRY/library/busybox:latest
COPY greeting.txt /greeting.txt
RUN seq 1 60 && echo "about to fail" && exit 3
RUN echo never
`

// normalizer turns what changes from run to run into fixed words.
type normalizer struct{ reg, root, ctx string }

var (
	plainLineTime = regexp.MustCompile(`(?m)^(#\d+) \d+\.\d{3} `)
	doneTime      = regexp.MustCompile(`DONE \d+\.\ds`)
	builtIn       = regexp.MustCompile(`Built in \d+\.\ds`)
	layerBytes    = regexp.MustCompile(`(layers?), \d+(\.\d)?[kMGT]?B`)
	digest        = regexp.MustCompile(`sha256:[0-9a-f]{64}`)
	buildID       = regexp.MustCompile(`\d{8}-\d{6}-[0-9a-f]{6}`)
	// byte counts depend on which layers the store has already: they are
	// left to the progress package's own tests
	transferLine = regexp.MustCompile(`(?m)^#\d+ sha256:[0-9a-f]{12} .*\n`)
	// what a failed lookup on the network says depends on the network
	resolving = regexp.MustCompile(`(resolving \S+): .*`)
)

func (n normalizer) text(s string) string {
	s = strings.ReplaceAll(s, n.reg, "REGISTRY")
	s = strings.ReplaceAll(s, n.root, "ROOT")
	s = strings.ReplaceAll(s, n.ctx, "CONTEXT")
	s = plainLineTime.ReplaceAllString(s, "$1 T ")
	s = transferLine.ReplaceAllString(s, "")
	s = doneTime.ReplaceAllString(s, "DONE Ts")
	s = builtIn.ReplaceAllString(s, "Built in Ts")
	s = layerBytes.ReplaceAllString(s, "$1, SIZE")
	s = digest.ReplaceAllString(s, "sha256:DIGEST")
	s = resolving.ReplaceAllString(s, "$1: NETWORK ERROR")
	return buildID.ReplaceAllString(s, "BUILD_ID")
}

// events decodes rawjson output and clears what changes between runs.
func (n normalizer) events(t *testing.T, out string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e progress.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("rawjson line %q: %v", l, err)
		}
		if e.Time.IsZero() {
			t.Errorf("event without a time: %s", l)
		}
		e.Time = time.Time{}
		if e.Duration != nil {
			d := 0.0
			e.Duration = &d
		}
		if e.Image != nil {
			e.Image.Size = 1
		}
		var line bytes.Buffer
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
		b.WriteString(n.text(line.String()))
	}
	return b.String()
}

// TestProgressOutput builds through the kiln binary and compares the
// plain and rawjson progress, and a failure's report, with
// testdata/progress/*.golden (timings, digests and paths normalised).
func TestProgressOutput(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	ok := progressContext(t, reg, progressDockerfile)
	bad := progressContext(t, reg, failingDockerfile)
	ignored := progressContext(t, reg, progressDockerfile, ".dockerignore", "# no text files\n*.txt\n")
	n := normalizer{reg: reg, root: root}
	build := func(ctx string, args ...string) (string, int) {
		args = append([]string{"build", "--root", root}, args...)
		return kiln(t, append(args, ctx)...)
	}

	tests := []struct {
		name     string
		ctx      string
		args     []string
		wantCode int
		json     bool
	}{
		{"first.plain", ok, []string{"--progress=plain", "-t", "progress:test", "-o", "type=oci,dest=" + filepath.Join(root, "image.tar")}, 0, false},
		{"cached.plain", ok, []string{"--progress=plain"}, 0, false},
		{"no-cache.rawjson", ok, []string{"--progress=rawjson", "--no-cache", "-t", "progress:test"}, 0, true},
		{"failing.plain", bad, []string{"--progress=plain"}, 1, false},
		{"failing.rawjson", bad, []string{"--progress=rawjson"}, 1, true},
		{"dockerignored.plain", ignored, []string{"--progress=plain"}, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := build(tt.ctx, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d:\n%s", code, tt.wantCode, out)
			}
			n := n
			n.ctx = tt.ctx
			var got string
			if tt.json {
				// the error report follows the events on stderr
				events, report, _ := strings.Cut(out, "\n------\n")
				if report != "" {
					report = "------\n" + report
				}
				got = n.events(t, events) + n.text(report)
			} else {
				got = n.text(out)
			}
			compareGolden(t, filepath.Join("testdata", "progress", tt.name+".golden"), got)
		})
	}

	t.Run("complete log of the failing step", func(t *testing.T) {
		out, _ := build(bad, "--progress=plain")
		m := regexp.MustCompile(`the step's complete output: (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no log path in:\n%s", out)
		}
		data, err := os.ReadFile(m[1])
		if err != nil {
			t.Fatal(err)
		}
		// the report shows the last 20 lines; the file has all of them
		if !strings.HasPrefix(string(data), "1\n2\n3\n") || !strings.Contains(string(data), "60\nabout to fail\n") {
			t.Errorf("%s is not the step's whole output:\n%.200s", m[1], data)
		}
		transcript, err := os.ReadFile(filepath.Join(filepath.Dir(m[1]), "build.log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(transcript), "#3 ERROR: ") {
			t.Errorf("build.log lacks the error:\n%s", transcript)
		}
	})

	t.Run("quiet prints only the image ID", func(t *testing.T) {
		cmd := exec.Command(kilnBin, "build", "--root", root, "-q", ok)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v: %s", err, stderr.String())
		}
		if !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(stdout.String()) || stderr.Len() > 0 {
			t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
		}
	})

	t.Run("unknown mode is a usage error", func(t *testing.T) {
		out, code := build(ok, "--progress=fancy")
		if code != exitUsage || !strings.Contains(out, "rawjson") {
			t.Errorf("exit %d, want %d:\n%s", code, exitUsage, out)
		}
	})
}

var (
	ansi      = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)
	cursorUp  = regexp.MustCompile(`\x1b\[\d+A`)
	headerSec = regexp.MustCompile(`\[\+\] Building (\d+\.\d)s`)
)

// TestProgressTTY runs a build in a pseudo-terminal, where --progress=auto
// picks the live view, and checks that it redraws in place while steps
// run, shows their output, fits the terminal, and ends with every step
// and the summary.
func TestProgressTTY(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	ctx := progressContext(t, reg, `FROM REGISTRY/library/busybox:latest AS a
RUN for i in 1 2 3 4 5 6 7 8 9 10; do echo "a says $i"; sleep 0.2; done
FROM REGISTRY/library/busybox:latest
RUN for i in 1 2 3 4 5 6 7 8; do echo "b says $i"; sleep 0.2; done
COPY --from=a /etc/passwd /passwd
`)
	const cols, rows = 100, 12
	cmd := exec.Command(kilnBin, "build", "--root", t.TempDir(), "-t", "tty:test", ctx)
	cmd.Env = append(os.Environ(), "TERM=xterm", "KILN_PROGRESS=")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: cols, Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var raw bytes.Buffer
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(&raw, tty)
		copied <- err
	}()
	werr := cmd.Wait()
	// on Linux, reading the master after the last writer closed is EIO
	if err := <-copied; err != nil && !errors.Is(err, os.ErrClosed) && !strings.Contains(err.Error(), "input/output error") {
		t.Fatal(err)
	}
	out := raw.String()
	if werr != nil {
		t.Fatalf("kiln build: %v\n%s", werr, out)
	}

	frames := cursorUp.Split(out, -1)
	if len(frames) < 5 {
		t.Fatalf("%d frames, want the view redrawn in place several times:\n%q", len(frames), out)
	}
	var secs []float64
	sawOutput := false
	for i, f := range frames {
		text := strings.ReplaceAll(ansi.ReplaceAllString(f, ""), "\r", "")
		lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		last := i == len(frames)-1
		if !last && len(lines) >= rows {
			t.Errorf("frame %d has %d lines on a %d-line terminal:\n%s", i, len(lines), rows, text)
		}
		for _, l := range lines {
			if len([]rune(l)) >= cols && !last {
				t.Errorf("frame %d: line wider than the terminal: %q", i, l)
			}
		}
		if strings.Contains(text, " => => # a says") || strings.Contains(text, " => => # b says") {
			sawOutput = true
		}
		if m := headerSec.FindStringSubmatch(text); m != nil {
			s, _ := strconv.ParseFloat(m[1], 64)
			secs = append(secs, s)
		}
	}
	if !sawOutput {
		t.Error("no frame shows a running step's output")
	}
	if len(secs) < 3 || secs[len(secs)-1] <= secs[0] {
		t.Errorf("the header's clock did not move: %v", secs)
	}
	final := ansi.ReplaceAllString(frames[len(frames)-1], "")
	for _, want := range []string{"(5/5) FINISHED", "[a 2/2] RUN", "[stage-1 3/3] COPY --from=a", "Built in ", "5 steps", "image sha256:", "named tty:test"} {
		if !strings.Contains(final, want) {
			t.Errorf("the last frame lacks %q:\n%s", want, final)
		}
	}
	if strings.Contains(final, "=> => #") {
		t.Errorf("the last frame still shows step output:\n%s", final)
	}
}

// TestErrorReports keeps the whole report of each broken build of
// testdata/errors as testdata/progress/errors/CASE.golden: what a person
// sees when that build fails.
func TestErrorReports(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	dir := filepath.Join("..", "..", "testdata", "errors")
	for _, name := range caseNames(t, dir) {
		t.Run(name, func(t *testing.T) {
			ctxDir, meta := prepareCase(t, filepath.Join(dir, name), reg)
			out, code := kiln(t, buildArgs(root, ctxDir, meta)...)
			if code != exitFailed {
				t.Errorf("exit code %d, want %d", code, exitFailed)
			}
			n := normalizer{reg: reg, root: root, ctx: ctxDir}
			compareGolden(t, filepath.Join("testdata", "progress", "errors", name+".golden"), n.text(out))
		})
	}
}

// TestAutoMode picks the display without a terminal.
func TestAutoMode(t *testing.T) {
	tests := []struct {
		name, env, mode, want string
		usage                 bool
	}{
		{"pipe", "", "auto", "plain", false},
		{"env overrides auto", "rawjson", "auto", "rawjson", false},
		{"env auto", "auto", "auto", "plain", false},
		{"flag wins over env", "rawjson", "quiet", "quiet", false},
		{"unknown", "", "fancy", "", true},
		{"unknown from env", "fancy", "auto", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KILN_PROGRESS", tt.env)
			var buf bytes.Buffer
			d, err := openProgress(tt.mode, &buf, "")
			if tt.usage {
				var ue *usageError
				if !errors.As(err, &ue) {
					t.Fatalf("error %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			d.Step("[1/1] FROM scratch").Done()
			progress.Summarize(d, progress.Summary{ImageID: "sha256:1", Layers: 1})
			got := "quiet"
			switch {
			case strings.HasPrefix(buf.String(), `{"type":"start"`):
				got = "rawjson"
			case strings.HasPrefix(buf.String(), "#1 [1/1] FROM scratch\n"):
				got = "plain"
			case buf.Len() > 0:
				got = "unknown: " + buf.String()
			}
			if got != tt.want {
				t.Errorf("mode %s, want %s", got, tt.want)
			}
		})
	}
}
