package progress

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// KeepLogs is how many builds' log directories are kept under a
// logs directory; older ones are removed when a build keeps its own.
const KeepLogs = 50

// NewBuildID returns a new build's ID: its start time, then random hex,
// so that IDs sort by age and two builds in the same second differ.
func NewBuildID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// logView keeps every step's complete output in a directory: N.log is
// step #N's output byte for byte, build.log the plain transcript of the
// whole build. The terminal may clip; these files never do.
//
// The directory is made only once there is something to keep: a step's
// output, a transfer (pull, push), a failed step, or a build that ends
// without its summary (it failed). A rebuild that runs nothing writes nothing and rotates nothing;
// until then the transcript waits in memory.
type logView struct {
	logsDir string // where build directories are, and old ones pruned
	dir     string
	plain   *plainView
	pending bytes.Buffer // the transcript until dir exists
	build   *os.File     // build.log, once dir exists
	steps   []*step      // started before dir existed: their N.log comes with it
	files   map[*step]*os.File
	made    bool  // dir exists (or making it failed: err says so)
	ok      bool  // the build ended with its summary
	err     error // the first write error; the build goes on without logs
}

func newLogView(logsDir, dir string) *logView {
	v := &logView{logsDir: logsDir, dir: dir, files: map[*step]*os.File{}}
	v.plain = newPlainView(transcript{v})
	return v
}

// transcript writes build.log, or holds its text until the file exists.
type transcript struct{ v *logView }

func (t transcript) Write(b []byte) (int, error) {
	if t.v.build == nil {
		return t.v.pending.Write(b)
	}
	n, err := t.v.build.Write(b)
	t.v.fail(err)
	return n, nil
}

// keep makes the build's log directory, with what the build showed so far.
func (v *logView) keep() {
	if v.made {
		return
	}
	v.made = true
	// Another build may prune at the same time: losing that race costs
	// only old logs, never this build's.
	_ = pruneLogs(v.logsDir, KeepLogs-1)
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		v.fail(fmt.Errorf("creating the build's log directory: %w", err))
		return
	}
	f, err := os.Create(filepath.Join(v.dir, "build.log"))
	if err != nil {
		v.fail(fmt.Errorf("creating the build's log: %w", err))
		return
	}
	v.build = f
	_, err = f.Write(v.pending.Bytes())
	v.fail(err)
	v.pending = bytes.Buffer{}
	for _, s := range v.steps {
		v.open(s)
		if s.state != running {
			v.closeStep(s)
		}
	}
	v.steps = nil
}

// StepLogPath is where step n's output is kept in a build's log directory.
func StepLogPath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("%d.log", n))
}

func (v *logView) fail(err error) {
	if err != nil && v.err == nil {
		v.err = fmt.Errorf("keeping the build's logs in %s: %w", v.dir, err)
	}
}

func (v *logView) open(s *step) {
	if v.build == nil {
		return // no directory: making it failed
	}
	f, err := os.Create(StepLogPath(v.dir, s.n))
	v.fail(err)
	if err == nil {
		v.files[s] = f
	}
}

func (v *logView) closeStep(s *step) {
	if f := v.files[s]; f != nil {
		v.fail(f.Close())
		delete(v.files, s)
	}
}

func (v *logView) start(s *step) {
	v.plain.start(s)
	if !v.made {
		v.steps = append(v.steps, s)
		return
	}
	v.open(s)
}

func (v *logView) write(s *step, b []byte) {
	v.keep()
	if f := v.files[s]; f != nil {
		_, err := f.Write(b)
		v.fail(err)
	}
}

func (v *logView) line(s *step, l string) { v.plain.line(s, l) }
func (v *logView) transfer(s *step, t *transfer) {
	v.keep() // a pull or a push: work worth a record
	v.plain.transfer(s, t)
}

func (v *logView) end(s *step) {
	v.plain.end(s)
	if s.state == failed || s.state == canceled {
		v.keep()
	}
	v.closeStep(s)
}

func (v *logView) summary(st Stats, sum Summary) {
	v.plain.summary(st, sum)
	v.ok = true
}

func (v *logView) message(l string) { v.plain.message(l) }

func (v *logView) close() error {
	if !v.ok {
		v.keep() // the build failed: its transcript is worth keeping
	}
	for s := range v.files {
		v.closeStep(s)
	}
	if v.build != nil {
		v.fail(v.build.Close())
		v.build = nil
	}
	return v.err
}

// pruneLogs removes all but the newest keep build directories of logsDir.
// A build running beside this one is among the newest: it is kept.
func pruneLogs(logsDir string, keep int) error {
	ents, err := os.ReadDir(logsDir)
	if err != nil {
		return err
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) <= keep {
		return nil
	}
	sort.Strings(dirs) // IDs start with their time
	for _, d := range dirs[:len(dirs)-keep] {
		if err := os.RemoveAll(filepath.Join(logsDir, d)); err != nil {
			return fmt.Errorf("removing old build logs: %w", err)
		}
	}
	return nil
}
