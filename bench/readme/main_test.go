package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The blocks of each report, against golden files: testdata/results.txt is
// a whole make bench run (BuildKit and the fleet), results-kiln-only.txt a
// partial one without BuildKit (nor dockerd for the kiln serve rows),
// results-serve.txt a whole one with the kiln serve rows, and
// results-serve-only.txt those rows alone (bench/run.sh serve).
func TestBlocks(t *testing.T) {
	for _, name := range []string{"results", "results-kiln-only", "results-serve", "results-serve-only"} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if err := run(filepath.Join("testdata", name+".txt"), "", true, &out); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./bench/readme -update writes it)", err)
			}
			if out.String() != string(want) {
				t.Errorf("blocks differ from %s (go test ./bench/readme -update rewrites it):\n%s", golden, out.String())
			}
		})
	}
}

func TestParse(t *testing.T) {
	f, err := os.Open("testdata/results.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Date != "2026-12-05" || res.Commit != "c2f3ace" || res.BuildKit != "v0.34.2" || !res.HasBK {
		t.Errorf("header: %+v", res)
	}
	if len(res.Rows) != 9 {
		t.Errorf("%d rows, want 9", len(res.Rows))
	}
	if r := res.Rows[5]; r.Label != "500 MB RUN, OCI export" || r.Kiln != 3.25 || r.RSS != 32 || r.BuildKit != 11.28 {
		t.Errorf("row 6: %+v", r)
	}
	if r := res.Rows[6]; r.Label != "30 RUN steps, host network" || r.BuildKit != 0 {
		t.Errorf("kiln-only row in a run with BuildKit: %+v", r)
	}
	if res.PerRun != [2]float64{14.8, 63.8} {
		t.Errorf("per-RUN: %v", res.PerRun)
	}
	if len(res.Fleets) != 3 {
		t.Fatalf("%d fleets, want 3", len(res.Fleets))
	}
	f0 := res.Fleets[0]
	if f0.Label != "10k files" || len(f0.Kiln) != 4 || len(f0.BK) != 4 || f0.Reexport == nil || f0.Digest != "unchanged" || f0.Ratio != "0.20×" || f0.Target != "≤0.3×" {
		t.Errorf("fleet 1: %+v", f0)
	}
}

func TestParseServe(t *testing.T) {
	f, err := os.Open("testdata/results-serve.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Serve
	if s.Client != "20.10.24+dfsg1" || s.Dockerd != "20.10.24+dfsg1" || s.RSS != 65 || s.Skip != "" {
		t.Errorf("serve header: %+v", s)
	}
	if len(s.Rows) != 2 || s.Rows[0] != (serveRow{"10k-files cold", 7.525, 15.286}) || s.Rows[1] != (serveRow{"10k-files no-op rebuild", 3.7, 6.016}) {
		t.Errorf("serve rows: %+v", s.Rows)
	}
	if s.API != 45 || s.CLI != 9 || s.API10k != 4381 || s.CLI10k != 108 {
		t.Errorf("serve overhead: %+v", s)
	}
	if len(res.Rows) != 9 {
		t.Errorf("%d workload rows, want 9: the serve rows are not workload rows", len(res.Rows))
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tt := range []struct{ name, text, want string }{
		{"empty", "", "not a make bench report"},
		{"no table", "machine: 2 CPUs\n", "not a make bench report"},
		{"short row", "machine: x\nworkload a b\nfoo 12\n", "unreadable workload row"},
		{"bad number", "machine: x\nworkload a b\nfoo 1.2.3 40\n", "workload row"},
		{"bad serve row", "machine: x\nserve workload a b c\nfoo 1.0 x\n", "unreadable serve row"},
		{"bad serve overhead", "machine: x\nserve workload a b c\nfoo 1.0 2.0 0.50x\nserve overhead: none\n", "unreadable serve overhead"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(strings.NewReader(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parse: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestSplice(t *testing.T) {
	for _, tt := range []struct {
		name, text, want, err string
	}{
		{
			name: "replaces",
			text: "# x\n<!-- bench:begin -->\nold\ntable\n<!-- bench:end -->\nafter\n",
			want: "# x\n<!-- bench:begin -->\nNEW\n<!-- bench:end -->\nafter\n",
		},
		{
			name: "empty block",
			text: "<!-- bench:begin -->\n<!-- bench:end -->\n",
			want: "<!-- bench:begin -->\nNEW\n<!-- bench:end -->\n",
		},
		{
			name: "other blocks untouched",
			text: "<!-- bench:fleet:begin -->\nf\n<!-- bench:fleet:end -->\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n",
			want: "<!-- bench:fleet:begin -->\nf\n<!-- bench:fleet:end -->\n<!-- bench:begin -->\nNEW\n<!-- bench:end -->\n",
		},
		{name: "no markers", text: "# x\n", err: "no \"<!-- bench:begin -->\" marker"},
		{name: "no end", text: "<!-- bench:begin -->\nold\n", err: "has no \"<!-- bench:end -->\""},
		{name: "end before begin", text: "<!-- bench:end -->\n<!-- bench:begin -->\n", err: "has no"},
		{name: "twice", text: "<!-- bench:begin -->\n<!-- bench:end -->\n<!-- bench:begin -->\n<!-- bench:end -->\n", err: "more than once"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := splice(tt.text, "bench", "NEW\n")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("splice: %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// Rewriting a README changes only what is between the markers, and a
// second run changes nothing.
func TestRewriteReadme(t *testing.T) {
	dir := t.TempDir()
	readme := filepath.Join(dir, "README.md")
	before := "# kiln\n\n## Performance\n\nprose before\n\n<!-- bench:begin -->\nstale table\n<!-- bench:end -->\n\nprose between\n\n<!-- bench:fleet:begin -->\nstale fleet\n<!-- bench:fleet:end -->\n\n## After\n"
	if err := os.WriteFile(readme, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run("testdata/results.txt", readme, false, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# kiln\n\n## Performance\n\nprose before\n\n<!-- bench:begin -->\n", "<!-- bench:end -->\n\nprose between\n\n<!-- bench:fleet:begin -->\n", "<!-- bench:fleet:end -->\n\n## After\n",
		"| the same, no-op rebuild | 0.050 s | 25 MB | 0.440 s | 0.11× | ≤0.05× (≤40 ms) |", "on 2026-12-05 (kiln at c2f3ace, BuildKit v0.34.2 in the same run). Machine: 2 CPUs", "kernel 6.18.44-fc-v1252"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("README lacks %q:\n%s", want, got)
		}
	}
	for _, stale := range []string{"stale table", "stale fleet"} {
		if strings.Contains(string(got), stale) {
			t.Errorf("README still has %q", stale)
		}
	}
	if err := run("testdata/results.txt", readme, false, nil); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(readme)
	if !bytes.Equal(got, again) {
		t.Errorf("a second run changed the README:\n%s", again)
	}
	// A README without the markers is an error, and is left alone.
	if err := os.WriteFile(readme, []byte("# kiln\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run("testdata/results.txt", readme, false, nil); err == nil || !strings.Contains(err.Error(), "marker") {
		t.Errorf("README without markers: %v, want an error naming the markers", err)
	}
}

// A report from before run.sh wrote its date is dated by its mtime.
func TestDateFromModTime(t *testing.T) {
	data, err := os.ReadFile("testdata/results.txt")
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "results.txt")
	if err := os.WriteFile(old, bytes.Replace(data, []byte("date: 2026-12-05\n"), nil, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	if err := os.Chtimes(old, when, when); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(old, "", true, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "on 2026-11-30 (") {
		t.Errorf("no date from the file's mtime:\n%s", out.String())
	}
}
