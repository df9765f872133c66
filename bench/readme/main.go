// Command readme writes the performance tables of README.md from the
// report of a make bench run (BENCH_DIR/results.txt), so that the figures
// README.md shows are always those of one whole run, with the machine and
// the date it ran on, and are never edited by hand:
//
//	go run ./bench/readme -results /var/tmp/kiln-bench/results.txt -readme README.md
//
// It replaces what is between the marker comments of each block:
//
//	<!-- bench:begin --> … <!-- bench:end -->              the workloads of bench/run.sh
//	<!-- bench:fleet:begin --> … <!-- bench:fleet:end -->  the fleet (bench/fleet)
//
// and leaves everything else in README.md as it is.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

func main() {
	results := flag.String("results", "/var/tmp/kiln-bench/results.txt", "the report of make bench")
	readme := flag.String("readme", "README.md", "the README to rewrite")
	print := flag.Bool("print", false, "print the blocks instead of rewriting the README")
	flag.Parse()
	if err := run(*results, *readme, *print, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench/readme:", err)
		os.Exit(1)
	}
}

func run(resultsPath, readmePath string, print bool, stdout io.Writer) error {
	f, err := os.Open(resultsPath)
	if err != nil {
		return fmt.Errorf("reading the bench results: %w (run make bench first)", err)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		return fmt.Errorf("reading %s: %w", resultsPath, err)
	}
	if res.Date == "" {
		// A report from before run.sh wrote its date: when it was written.
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("reading %s: %w", resultsPath, err)
		}
		res.Date = st.ModTime().UTC().Format(time.DateOnly)
	}
	blocks := map[string]string{"bench": renderMain(res), "bench:fleet": renderFleet(res)}
	if print {
		for _, name := range []string{"bench", "bench:fleet"} {
			fmt.Fprintf(stdout, "%s\n%s\n", name, blocks[name])
		}
		return nil
	}
	old, err := os.ReadFile(readmePath)
	if err != nil {
		return fmt.Errorf("reading the README: %w", err)
	}
	text := string(old)
	for _, name := range []string{"bench", "bench:fleet"} {
		if text, err = splice(text, name, blocks[name]); err != nil {
			return fmt.Errorf("%s: %w", readmePath, err)
		}
	}
	if text == string(old) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(readmePath), ".readme-")
	if err != nil {
		return fmt.Errorf("writing the README: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the README: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing the README: %w", err)
	}
	if st, err := os.Stat(readmePath); err == nil {
		os.Chmod(tmp.Name(), st.Mode().Perm())
	}
	if err := os.Rename(tmp.Name(), readmePath); err != nil {
		return fmt.Errorf("writing the README: %w", err)
	}
	return nil
}

// splice replaces the text between <!-- NAME:begin --> and <!-- NAME:end -->
// (each on a line of its own) with block.
func splice(text, name, block string) (string, error) {
	begin, end := "<!-- "+name+":begin -->\n", "<!-- "+name+":end -->"
	i := strings.Index(text, begin)
	if i < 0 {
		return "", fmt.Errorf("no %q marker line (put the %s and %s markers around the generated table)", strings.TrimSpace(begin), strings.TrimSpace(begin), end)
	}
	if strings.Count(text, begin) > 1 {
		return "", fmt.Errorf("%q appears more than once", strings.TrimSpace(begin))
	}
	j := strings.Index(text[i+len(begin):], end)
	if j < 0 {
		return "", fmt.Errorf("%q has no %q after it", strings.TrimSpace(begin), end)
	}
	j += i + len(begin)
	return text[:i+len(begin)] + strings.TrimRight(block, "\n") + "\n" + text[j:], nil
}

// results is what a report of bench/run.sh (and bench/fleet) holds.
type results struct {
	Machine  string // "2 CPUs (…), 24 GB, kernel …, ext4 at /var/tmp/kiln-bench"
	Date     string // YYYY-MM-DD
	Commit   string // kiln's
	BuildKit string // its version, "" when unknown; see HasBK
	HasBK    bool   // BuildKit ran in the same run
	Partial  string // BENCH_ONLY, when the run was partial
	Rows     []row
	PerRun   [2]float64 // ms, kiln and BuildKit (0: not measured)
	NetLine  string     // the RUN network summary
	NetBench string     // the executor's network benchmarks
	EmuSkip  string     // why the emulated arm64 row is missing, if it is
	Serve    serveResults
	Fleets   []fleet
}

// serveResults are bench/serve.sh's: docker build through kiln serve and
// through dockerd's classic builder.
type serveResults struct {
	Client, Dockerd string // versions
	RSS             int    // kiln serve's peak, MB
	Rows            []serveRow
	// the no-op build through the API and with kiln build, ms: of a
	// one-file context, and of the 10k-file one
	API, CLI, API10k, CLI10k float64
	Skip                     string // why the rows are missing, if they are
}

type serveRow struct {
	Label         string
	Kiln, Dockerd float64 // s
}

type row struct {
	Label    string
	Kiln     float64 // s
	RSS      int     // MB
	BuildKit float64 // s, 0 when not measured
}

type fleet struct {
	Label    string
	Kiln     []runner
	BK       []runner
	Reexport *runner
	Digest   string // "unchanged", or what changed
	Ratio    string // "0.20×"
	Target   string // "≤0.3×"
}

type runner struct {
	Seconds, Down, Up float64 // s, MB, MB
}

var (
	perRunRE   = regexp.MustCompile(`^per-RUN overhead .*: kiln ([0-9.]+) ms(?:, BuildKit ([0-9.]+) ms)?`)
	fleetRE    = regexp.MustCompile(`^fleet: (.*), (\d+) runners,`)
	runnerRE   = regexp.MustCompile(`^(kiln|BuildKit) runner (\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)`)
	reexportRE = regexp.MustCompile(`^kiln, unchanged re-export\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)`)
	digestRE   = regexp.MustCompile(`^cache digest across the unchanged re-export: (\S+)`)
	fleetSumRE = regexp.MustCompile(`^runners 2–\d+: .*: ([0-9.]+)× \(target (.*)\)`)
	serveRE    = regexp.MustCompile(`^serve: docker CLI (\S+), dockerd (\S+) .*; kiln serve peak RSS (\d+) MB`)
	serveRowRE = regexp.MustCompile(`^(.*\S)\s+([0-9.]+)\s+([0-9.]+)\s+[0-9.]+x$`)
	overheadRE = regexp.MustCompile(`^serve overhead: .* via kiln serve ([0-9.]+) ms, kiln build ([0-9.]+) ms: .*; 10k-file context ([0-9.]+) ms vs ([0-9.]+) ms`)
)

// parse reads a results.txt.
func parse(r io.Reader) (*results, error) {
	res := &results{}
	sc := bufio.NewScanner(r)
	inTable, inServe := false, false
	var fl *fleet
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " ")
		key, val, _ := strings.Cut(line, ": ")
		switch {
		case key == "machine":
			res.Machine = val
		case key == "date":
			res.Date = val
		case key == "kiln":
			res.Commit = val
		case key == "BuildKit" && !inTable && fl == nil:
			res.BuildKit = val
			if val == "unknown version" {
				res.BuildKit = ""
			}
		case key == "partial":
			res.Partial = val
		case strings.HasPrefix(line, "workload "):
			inTable = true
			res.HasBK = strings.Contains(line, "BuildKit")
		case strings.HasPrefix(line, "per-RUN overhead"):
			inTable = false
			m := perRunRE.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("unreadable per-RUN line %q", line)
			}
			res.PerRun[0], _ = strconv.ParseFloat(m[1], 64)
			res.PerRun[1], _ = strconv.ParseFloat(m[2], 64)
		case serveRE.MatchString(line):
			m := serveRE.FindStringSubmatch(line)
			res.Serve.Client, res.Serve.Dockerd = m[1], m[2]
			res.Serve.RSS, _ = strconv.Atoi(m[3])
		case strings.HasPrefix(line, "serve workload "):
			inServe = true
		case strings.HasPrefix(line, "serve overhead: "):
			inServe = false
			m := overheadRE.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("unreadable serve overhead line %q", line)
			}
			res.Serve.API, res.Serve.CLI, res.Serve.API10k, res.Serve.CLI10k = num(m[1]), num(m[2]), num(m[3]), num(m[4])
		case inServe:
			m := serveRowRE.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("unreadable serve row %q", line)
			}
			res.Serve.Rows = append(res.Serve.Rows, serveRow{Label: m[1], Kiln: num(m[2]), Dockerd: num(m[3])})
		case strings.HasPrefix(line, "serve rows: skipped: "):
			res.Serve.Skip = strings.TrimPrefix(line, "serve rows: skipped: ")
		case inTable:
			rw, err := parseRow(line, res.HasBK)
			if err != nil {
				return nil, err
			}
			res.Rows = append(res.Rows, rw)
		case strings.HasPrefix(line, "RUN network (default"):
			res.NetLine = line
		case strings.HasPrefix(line, "emulated arm64 row: skipped: "):
			res.EmuSkip = strings.TrimPrefix(line, "emulated arm64 row: skipped: ")
		case strings.HasPrefix(line, "RUN network, executor benchmarks: "):
			res.NetBench = strings.TrimPrefix(line, "RUN network, executor benchmarks: ")
		case fleetRE.MatchString(line):
			res.Fleets = append(res.Fleets, fleet{Label: fleetRE.FindStringSubmatch(line)[1]})
			fl = &res.Fleets[len(res.Fleets)-1]
		case fl != nil && runnerRE.MatchString(line):
			m := runnerRE.FindStringSubmatch(line)
			rn := runner{Seconds: num(m[3]), Down: num(m[4]), Up: num(m[5])}
			if m[1] == "kiln" {
				fl.Kiln = append(fl.Kiln, rn)
			} else {
				fl.BK = append(fl.BK, rn)
			}
		case fl != nil && reexportRE.MatchString(line):
			m := reexportRE.FindStringSubmatch(line)
			fl.Reexport = &runner{Seconds: num(m[1]), Down: num(m[2]), Up: num(m[3])}
		case fl != nil && digestRE.MatchString(line):
			fl.Digest = digestRE.FindStringSubmatch(line)[1]
		case fl != nil && fleetSumRE.MatchString(line):
			m := fleetSumRE.FindStringSubmatch(line)
			fl.Ratio, fl.Target = m[1]+"×", m[2]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if res.Machine == "" || len(res.Rows) == 0 && len(res.Serve.Rows) == 0 {
		return nil, errors.New("no machine line or no workload table: not a make bench report")
	}
	return res, nil
}

func num(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// parseRow reads "LABEL  kiln-s  rss-MB  [bk-s  ratio]": the label has
// spaces, the figures none.
func parseRow(line string, bk bool) (row, error) {
	f := strings.Fields(line)
	n := 2
	if bk {
		n = 4
	}
	if len(f) <= n {
		return row{}, fmt.Errorf("unreadable workload row %q", line)
	}
	figs := f[len(f)-n:]
	rw := row{Label: strings.Join(f[:len(f)-n], " ")}
	var err error
	if rw.Kiln, err = strconv.ParseFloat(figs[0], 64); err != nil {
		return row{}, fmt.Errorf("workload row %q: %w", line, err)
	}
	if rw.RSS, err = strconv.Atoi(figs[1]); err != nil {
		return row{}, fmt.Errorf("workload row %q: %w", line, err)
	}
	if bk && figs[2] != "-" {
		if rw.BuildKit, err = strconv.ParseFloat(figs[2], 64); err != nil {
			return row{}, fmt.Errorf("workload row %q: %w", line, err)
		}
	}
	return rw, nil
}

// workloads are the README's names and targets (issue 11) of bench/run.sh's
// rows, in README order; rows not listed here only feed the sentences
// below the table (the 1-RUN and host-network builds) or, if new, are
// shown under their own label.
var workloads = []struct{ label, name, target string }{
	{"10k-files cold", "10,000 files (~120 MB) with one COPY + 2 RUN, cold", "≤0.12×"},
	{"10k-files no-op rebuild", "the same, no-op rebuild", "≤0.05× (≤40 ms)"},
	{"10k-files one file changed", "the same, one file changed", "≤0.1×"},
	{"30 RUN steps cold", "30 trivial RUN steps, cold", "≤0.1×"},
	{"500 MB RUN, OCI export", "one RUN writing 500 MB, OCI archive export", "≤0.25×"},
	{"arm64 emulated RUN steps cold", "11 RUN steps of a linux/arm64 build under QEMU (both with the same binfmt_misc handlers): gzip of 30 MB, 300 emulated processes, cold", "–"},
}

var derivedRows = map[string]bool{"1 RUN step cold": true, "30 RUN steps, host network": true, "1 RUN step, host network": true}

const generated = "<!-- generated by bench/readme from make bench's results.txt: do not edit by hand -->"

func renderMain(res *results) string {
	var b strings.Builder
	b.WriteString(generated + "\n")
	bkName := "BuildKit"
	if res.BuildKit != "" {
		bkName += " " + res.BuildKit
	}
	fmt.Fprintf(&b, "Measured by `make bench` on %s (", res.Date)
	if res.Commit != "" {
		fmt.Fprintf(&b, "kiln at %s, ", res.Commit)
	}
	if res.HasBK {
		fmt.Fprintf(&b, "%s in the same run", bkName)
	} else {
		b.WriteString("without BuildKit")
	}
	if res.Partial != "" {
		fmt.Fprintf(&b, "; a partial run: %s", res.Partial)
	}
	fmt.Fprintf(&b, "). Machine: %s.\n\n", machine(res.Machine))
	if len(res.Rows) == 0 {
		// bench/run.sh serve: kiln serve's rows alone
		renderServe(&b, res)
		return b.String()
	}
	fmt.Fprintf(&b, "| workload | kiln | peak RSS | %s | kiln / BuildKit | target |\n", bkName)
	b.WriteString("|---|---|---|---|---|---|\n")
	byLabel := map[string]row{}
	for _, r := range res.Rows {
		byLabel[r.Label] = r
	}
	emit := func(name string, r row, target string) {
		fmt.Fprintf(&b, "| %s | %s | %d MB | %s | %s | %s |\n", name, fine(r.Kiln), r.RSS, fine(r.BuildKit), ratio(r.Kiln, r.BuildKit), target)
	}
	known := map[string]bool{}
	for _, w := range workloads {
		known[w.label] = true
		if r, ok := byLabel[w.label]; ok {
			emit(w.name, r, w.target)
		}
	}
	for _, r := range res.Rows {
		if !known[r.Label] && !derivedRows[r.Label] {
			emit(r.Label, r, "")
		}
	}
	if k, bk := res.PerRun[0], res.PerRun[1]; k > 0 {
		fmt.Fprintf(&b, "| per-RUN overhead ((30 RUN − 1 RUN) / 29) | %.1f ms | | %s | %s | ≤10 ms |\n", k, msOrDash(bk), ratio(k, bk))
	}
	b.WriteString("\nPeak RSS target: ≤200 MB on every row.")
	if m := netRE.FindStringSubmatch(res.NetLine); m != nil {
		fmt.Fprintf(&b, " RUN's default isolated network (pasta) costs %s once per build; the per-RUN overhead is %s in it and %s with the host network.", m[1], m[2], m[3])
	}
	if res.NetBench != "" {
		fmt.Fprintf(&b, " The executor's benchmarks of the same: %s.", strings.TrimSuffix(res.NetBench, "."))
	}
	if res.EmuSkip != "" {
		fmt.Fprintf(&b, " The emulated arm64 row was skipped: %s.", strings.TrimSuffix(res.EmuSkip, "."))
	}
	if res.Serve.Skip != "" {
		fmt.Fprintf(&b, " The kiln serve rows were skipped: %s.", strings.TrimSuffix(res.Serve.Skip, "."))
	}
	b.WriteString("\n")
	if len(res.Serve.Rows) > 0 {
		b.WriteString("\n")
		renderServe(&b, res)
	}
	return b.String()
}

// serveWorkloads are the README's names of bench/serve.sh's rows.
var serveWorkloads = map[string]string{
	"10k-files cold":          "10,000 files (~120 MB) with one COPY + 2 RUN, cold",
	"10k-files no-op rebuild": "the same, no-op rebuild",
}

// renderServe is the table of kiln serve against dockerd's classic builder.
func renderServe(b *strings.Builder, res *results) {
	s := res.Serve
	dockerd := "dockerd " + s.Dockerd
	fmt.Fprintf(b, "`docker build` with the classic build API (docker CLI %s, `DOCKER_BUILDKIT=0`, `--network none`) through `kiln serve` and through %s's classic builder, each daemon started empty but for the busybox base:\n\n", s.Client, dockerd)
	fmt.Fprintf(b, "| workload | through kiln serve | through %s | kiln serve / dockerd | target |\n", dockerd)
	b.WriteString("|---|---|---|---|---|\n")
	for _, r := range s.Rows {
		name := serveWorkloads[r.Label]
		if name == "" {
			name = r.Label
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | – |\n", name, secs(r.Kiln), secsOrDash(r.Dockerd), ratio(r.Kiln, r.Dockerd))
	}
	if s.API > 0 || s.CLI > 0 {
		fmt.Fprintf(b, "| per-request overhead of the API path: a no-op build of a one-file context, `docker build` through kiln serve (%.1f ms) − `kiln build` (%.1f ms) | %+.1f ms | | | ≤50 ms |\n", s.API, s.CLI, s.API-s.CLI)
	}
	b.WriteString("\n")
	if s.RSS > 0 {
		fmt.Fprintf(b, "kiln serve's peak RSS: %d MB.", s.RSS)
	}
	if s.API10k > 0 || s.CLI10k > 0 {
		fmt.Fprintf(b, " The no-op rebuild of the 10,000-file context takes %s through kiln serve and %s with `kiln build` on the same store: the difference is the context, sent as a tar archive and unpacked by the server, which `kiln build` reads in place.", secs(s.API10k/1000), secs(s.CLI10k/1000))
	}
	b.WriteString("\n")
}

var netRE = regexp.MustCompile(`set up once per build ([0-9.]+ ms) .*; per-RUN ([0-9.]+ ms) with it, ([0-9.]+ ms) with the host network`)

// machine turns run.sh's machine line into README prose: "2 CPUs (Intel(R)
// Xeon(R) Processor), 24 GB, kernel 6.18.44, ext4 at /var/tmp/kiln-bench"
// reads "2 CPUs (Intel(R) Xeon(R) Processor), 24 GB, kernel 6.18.44, ext4".
func machine(s string) string {
	if i := strings.LastIndex(s, " at /"); i >= 0 {
		s = s[:i]
	}
	return s
}

func secs(s float64) string { return fmt.Sprintf("%.2f s", s) }

// fine gives a time of the workload table under a second to the
// millisecond, as make bench measures it.
func fine(s float64) string {
	if s > 0 && s < 1 {
		return fmt.Sprintf("%.3f s", s)
	}
	return secsOrDash(s)
}

func secsOrDash(s float64) string {
	if s <= 0 {
		return "–"
	}
	return secs(s)
}

func msOrDash(ms float64) string {
	if ms <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f ms", ms)
}

func ratio(k, bk float64) string {
	if bk <= 0 {
		return "–"
	}
	if r := k / bk; r < 0.1 {
		// Two significant figures: 0.096 is not 0.10.
		return fmt.Sprintf("%.3f×", r)
	}
	return fmt.Sprintf("%.2f×", k/bk)
}

// fleetWorkloads are the README's names of bench/fleet's workloads.
var fleetWorkloads = map[string]string{
	"10k files":                                    "10,000 files, COPY + 2 RUN, all cached after runner 1",
	"cache mount, a commit per runner":             "a new commit per runner, RUN on a 60 MB cache mount that takes 3 s to fill cold",
	"Debian apt + Go modules, a commit per runner": "Debian: `apt-get install` of the Go toolchain, then `go build` of a module with 7 dependencies, a new commit per runner (`-workload apt-go`, served offline on 127.0.0.1)",
}

func renderFleet(res *results) string {
	var b strings.Builder
	b.WriteString(generated + "\n")
	if len(res.Fleets) == 0 {
		fmt.Fprintf(&b, "Not measured by the `make bench` run of %s (BENCH_FLEET=0).\n", res.Date)
		return b.String()
	}
	n := len(res.Fleets[0].Kiln)
	later := fmt.Sprintf("runners 2–%d", n)
	fmt.Fprintf(&b, "| workload | kiln runner 1 | kiln %s | BuildKit runner 1 | BuildKit %s | ratio, %s | target |\n", later, later, later)
	b.WriteString("|---|---|---|---|---|---|---|\n")
	var reexports []string
	for _, f := range res.Fleets {
		name := fleetWorkloads[f.Label]
		if name == "" {
			name = f.Label
		}
		cells := []string{name, "–", "–", "–", "–", "–", f.Target}
		if len(f.Kiln) > 0 {
			cells[1] = fmt.Sprintf("%s, %s up", secs(f.Kiln[0].Seconds), mb(f.Kiln[0].Up))
			cells[2] = spread(f.Kiln[1:])
		}
		if len(f.BK) > 0 {
			cells[3] = fmt.Sprintf("%s, %s up", secs(f.BK[0].Seconds), mb(f.BK[0].Up))
			cells[4] = spread(f.BK[1:])
		}
		if f.Ratio != "" {
			cells[5] = f.Ratio
		}
		if cells[6] == "" {
			cells[6] = "–"
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		if f.Reexport != nil {
			r := fmt.Sprintf("%s (%s, %s up, cache digest %s)", f.Label, secs(f.Reexport.Seconds), mb(f.Reexport.Up), f.Digest)
			reexports = append(reexports, r)
		}
	}
	if len(reexports) > 0 {
		fmt.Fprintf(&b, "\nA re-export of unchanged records, one more kiln runner on the last store: %s.\n", strings.Join(reexports, "; "))
	}
	return b.String()
}

// spread is "min–max s, N MB down" of later runners.
func spread(rs []runner) string {
	if len(rs) == 0 {
		return "–"
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	dlo, dhi := math.Inf(1), math.Inf(-1)
	for _, r := range rs {
		lo, hi = min(lo, r.Seconds), max(hi, r.Seconds)
		dlo, dhi = min(dlo, r.Down), max(dhi, r.Down)
	}
	s := secs(lo)
	if fmt.Sprintf("%.2f", lo) != fmt.Sprintf("%.2f", hi) {
		s = fmt.Sprintf("%.2f–%.2f s", lo, hi)
	}
	d := mb(dlo)
	if mb(dlo) != mb(dhi) {
		d = strings.TrimSuffix(mb(dlo), " MB") + "–" + mb(dhi)
	}
	return s + ", " + d + " down"
}

// mb rounds to whole MB; under 1 MB (but some bytes) reads "<1 MB".
func mb(v float64) string {
	switch {
	case v == 0:
		return "0 MB"
	case v < 0.5:
		return "<1 MB"
	}
	return fmt.Sprintf("%.0f MB", v)
}
