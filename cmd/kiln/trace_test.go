package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/trace"
)

// readTrace parses a --trace file and checks what every trace must hold:
// each span lies within its parent, and spans on one lane nest properly
// (what the viewers draw).
func readTrace(t *testing.T, path string) []trace.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no trace written: %v", err)
	}
	defer f.Close()
	evs, err := trace.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[int64]trace.Event{}
	for _, e := range evs {
		byID[e.ID()] = e
	}
	// ts and dur are written to the nanosecond, as µs with 3 decimals.
	const eps = 0.002
	within := func(c, p trace.Event) bool {
		return c.TS+eps >= p.TS && c.TS+c.Dur <= p.TS+p.Dur+eps
	}
	lanes := map[int][]trace.Event{}
	for _, e := range evs {
		lanes[e.Tid] = append(lanes[e.Tid], e)
		if e.Parent() == 0 {
			continue
		}
		p, ok := byID[e.Parent()]
		if !ok {
			t.Errorf("%q: its parent %d is not in the trace", e.Name, e.Parent())
		} else if !within(e, p) {
			t.Errorf("%q [%.3f µs + %.3f] is not within its parent %q [%.3f + %.3f]", e.Name, e.TS, e.Dur, p.Name, p.TS, p.Dur)
		}
	}
	for lane, l := range lanes {
		var open []trace.Event
		for _, e := range l {
			for len(open) > 0 && !within(e, open[len(open)-1]) {
				top := open[len(open)-1]
				if e.TS+eps < top.TS+top.Dur {
					t.Errorf("lane %d: %q overlaps %q without nesting in it", lane, e.Name, top.Name)
				}
				open = open[:len(open)-1]
			}
			open = append(open, e)
		}
	}
	return evs
}

// find returns the events whose name matches: exactly, by prefix when
// name ends with "*", or by suffix when it starts with "* ".
func find(evs []trace.Event, name string) []trace.Event {
	var out []trace.Event
	for _, e := range evs {
		if e.Name == name || (strings.HasSuffix(name, "*") && strings.HasPrefix(e.Name, strings.TrimSuffix(name, "*"))) ||
			(strings.HasPrefix(name, "* ") && strings.HasSuffix(e.Name, name[1:])) {
			out = append(out, e)
		}
	}
	return out
}

// ancestor reports whether a is e or one of its ancestors.
func ancestor(evs []trace.Event, a, e trace.Event) bool {
	byID := map[int64]trace.Event{}
	for _, x := range evs {
		byID[x.ID()] = x
	}
	for id := e.ID(); id != 0; id = byID[id].Parent() {
		if id == a.ID() {
			return true
		}
	}
	return false
}

func TestTrace(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	dir := t.TempDir()
	for name, data := range map[string]string{
		"a.txt":      "a\n",
		"sub/b.txt":  "b\n",
		"Dockerfile": "FROM " + reg + "/library/busybox:latest AS build\nCOPY . /src/\nRUN cat /src/a.txt > /built\n\nFROM " + reg + "/library/busybox:latest\nRUN echo other > /other\nCOPY --from=build /built /built\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tracePath := filepath.Join(t.TempDir(), "build.json")
	out := filepath.Join(t.TempDir(), "img.tar")
	ref := reg + "/traced/app:1"
	cacheDir := filepath.Join(t.TempDir(), "cache")
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "--trace", tracePath,
		"-o", "type=oci,dest="+out, "-t", ref, "--push", "--cache-to", "type=local,dest="+cacheDir, dir); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, log)
	}
	evs := readTrace(t, tracePath)

	roots := find(evs, "build")
	if len(roots) != 1 || roots[0].Parent() != 0 {
		t.Fatalf("want one root span \"build\", got %+v", roots)
	}
	build := roots[0]
	// Every phase, with how many spans at least.
	for _, tt := range []struct {
		name string
		min  int
	}{
		{"load Dockerfile", 1},
		{"open store", 1},
		{"plan", 1},
		{"stage *", 2},
		{"resolve *", 1},
		{"pull *", 1},
		{"layer", 1},
		{"context hash", 1},
		{"cache lookup", 4},
		{"run", 4},
		{"sandbox: start", 2}, // the COPYs' children; a RUN takes one started ahead
		{"sandbox: take the warm child", 2},
		{"sandbox: set up + run", 2},
		{"sandbox: set up + copy", 2},
		{"commit", 4},
		{"tar + compress", 4},
		{"publish", 3}, // the COPY --from layer is the RUN's: stored once
		{"export oci", 1},
		{"push", 1},
		{"push *", 1},
		{"export cache to *", 1},
		{"GET manifest", 1},
		{"GET blob", 2},      // config, layer
		{"PUT manifest", 1},  // the push
		{"* blob upload", 1}, // the push's new layers
	} {
		got := find(evs, tt.name)
		if len(got) < tt.min {
			t.Errorf("%d spans %q, want at least %d", len(got), tt.name, tt.min)
		}
		for _, e := range got {
			if !ancestor(evs, build, e) {
				t.Errorf("%q is not within the build span", e.Name)
			}
		}
	}
	for _, e := range find(evs, "layer") {
		if n, _ := e.Args["bytes"].(float64); n <= 0 {
			t.Errorf("pulled layer span without bytes: %v", e.Args)
		}
	}
	if got := find(evs, "export oci"); len(got) > 0 && got[0].Args["dest"] != out {
		t.Errorf("export span args %v, want dest %s", got[0].Args, out)
	}
	// Each step is a span named as the progress names it, within its
	// stage, with its phases within it.
	byID := map[int64]trace.Event{}
	for _, e := range evs {
		byID[e.ID()] = e
	}
	steps := map[string]trace.Event{}
	for _, name := range []string{"RUN cat /src/a.txt > /built", "COPY . /src/", "RUN echo other > /other", "COPY --from=build /built /built"} {
		got := find(evs, "*")
		var step *trace.Event
		for i, e := range got {
			if strings.HasSuffix(e.Name, "] "+name) && strings.HasPrefix(e.Name, "[") {
				step = &got[i]
			}
		}
		if step == nil {
			t.Errorf("no step span named after %q", name)
			continue
		}
		steps[name] = *step
		if p := byID[step.Parent()]; !strings.HasPrefix(p.Name, "stage ") {
			t.Errorf("step %q: parent %q, want its stage", step.Name, p.Name)
		}
	}
	for _, phase := range []string{"cache lookup", "run", "commit"} {
		for _, e := range find(evs, phase) {
			p := byID[e.Parent()]
			if !strings.HasPrefix(p.Name, "[") {
				t.Errorf("%q: parent %q, want a step", phase, p.Name)
			}
		}
	}
	for _, phase := range []string{"sandbox: start", "sandbox: set up + run"} {
		for _, e := range find(evs, phase) {
			if p := byID[e.Parent()]; p.Name != "run" {
				t.Errorf("%q: parent %q, want the step's run", phase, p.Name)
			}
		}
	}
	for _, phase := range []string{"tar + compress", "publish"} {
		for _, e := range find(evs, phase) {
			if p := byID[e.Parent()]; p.Name != "commit" {
				t.Errorf("%q: parent %q, want commit", phase, p.Name)
			}
		}
	}

	// A rebuild: every step a cache hit, and said so.
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "--trace", tracePath, "-o", "type=oci,dest="+out, "--cache-from", "type=local,src="+cacheDir, dir); code != 0 {
		t.Fatalf("rebuild: exit %d\n%s", code, log)
	}
	evs = readTrace(t, tracePath)
	if len(find(evs, "import cache")) != 1 {
		t.Errorf("rebuild with --cache-from: no import cache span")
	}
	if n := len(find(evs, "run")); n != 0 {
		t.Errorf("rebuild ran %d steps, want all cached", n)
	}
	hits := 0
	for _, e := range evs {
		if e.Args["cache"] == "hit" {
			hits++
		}
	}
	if hits != 4 {
		t.Errorf("rebuild: %d steps traced as cache hits, want 4", hits)
	}

	// An unwritable --trace fails the build, naming the flag.
	if log, code := kiln(t, "build", "--root", root, "--progress=plain", "--trace", filepath.Join(t.TempDir(), "no", "such", "dir.json"), dir); code == 0 || !strings.Contains(log, "--trace") {
		t.Errorf("build with an unwritable --trace: exit %d, want an error naming --trace\n%s", code, log)
	}
}

// A failed build still writes its trace: the failing step carries the
// error, and nothing is left open.
func TestTraceOfFailedBuild(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+reg+"/library/busybox:latest\nRUN exit 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tracePath := filepath.Join(t.TempDir(), "failed.json")
	if log, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "--trace", tracePath, dir); code != 1 {
		t.Fatalf("build of RUN exit 3: exit %d, want 1\n%s", code, log)
	}
	evs := readTrace(t, tracePath)
	var failed []string
	for _, e := range evs {
		if _, ok := e.Args["error"]; ok {
			failed = append(failed, e.Name)
		}
	}
	if !containsSuffix(failed, "RUN exit 3") {
		t.Errorf("spans with an error: %q, want the RUN exit 3 step among them", failed)
	}
	if len(find(evs, "build")) != 1 {
		t.Errorf("no build span in the failed build's trace")
	}
}

func containsSuffix(list []string, suffix string) bool {
	for _, s := range list {
		if strings.HasSuffix(s, suffix) {
			return true
		}
	}
	return false
}
