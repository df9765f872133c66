package progress

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// KeepLogs is how many builds' log directories OpenLogs keeps under a
// logs directory; older ones are removed when a build starts.
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
type logView struct {
	dir   string
	plain *plainView
	build *os.File
	files map[*step]*os.File
	err   error // the first write error; the build goes on without logs
}

func openLogView(dir string) (*logView, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the build's log directory: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "build.log"))
	if err != nil {
		return nil, fmt.Errorf("creating the build's log: %w", err)
	}
	return &logView{dir: dir, plain: newPlainView(f), build: f, files: map[*step]*os.File{}}, nil
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

func (v *logView) start(s *step) {
	v.plain.start(s)
	f, err := os.Create(StepLogPath(v.dir, s.n))
	v.fail(err)
	if err == nil {
		v.files[s] = f
	}
}

func (v *logView) write(s *step, b []byte) {
	if f := v.files[s]; f != nil {
		_, err := f.Write(b)
		v.fail(err)
	}
}

func (v *logView) line(s *step, l string)        { v.plain.line(s, l) }
func (v *logView) transfer(s *step, t *transfer) { v.plain.transfer(s, t) }

func (v *logView) end(s *step) {
	v.plain.end(s)
	if f := v.files[s]; f != nil {
		v.fail(f.Close())
		delete(v.files, s)
	}
}

func (v *logView) summary(st Stats, sum Summary) { v.plain.summary(st, sum) }
func (v *logView) message(l string)              { v.plain.message(l) }

func (v *logView) close() error {
	for s, f := range v.files {
		v.fail(f.Close())
		delete(v.files, s)
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
