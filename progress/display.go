package progress

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// Config chooses how a build is shown.
type Config struct {
	// Mode is plain, tty, rawjson or quiet.
	Mode string
	// Out receives the display; usually stderr.
	Out io.Writer
	// TTY tunes the tty mode.
	TTY TTYOptions
	// LogsDir, when set, keeps every step's complete output in
	// LogsDir/BUILD_ID, whatever the mode shows.
	LogsDir string
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// Display is a build's progress as the command shows it. It is a
// Printer, a Summarizer and an io.Closer.
type Display struct {
	*printer
	// ID is the build's ID, the name of its log directory.
	ID string
	// LogDir is where the build's logs are kept; "" when they are not.
	// A build that ran nothing and failed nothing keeps none: it does not
	// exist then.
	LogDir string
}

// Modes are the values of --progress that New knows, besides auto.
var Modes = []string{"plain", "tty", "rawjson", "quiet"}

// New starts showing a build. When the build's logs are kept, old builds'
// log directories beyond the newest KeepLogs are removed.
func New(c Config) (*Display, error) {
	now := c.Now
	if now == nil {
		now = time.Now
	}
	d := &Display{ID: NewBuildID(now())}
	var views []view
	if c.LogsDir != "" {
		// made when there is something to keep (see logView)
		d.LogDir = filepath.Join(c.LogsDir, d.ID)
		views = append(views, newLogView(c.LogsDir, d.LogDir))
	}
	var tty *ttyView
	switch c.Mode {
	case "plain":
		views = append(views, newPlainView(c.Out))
	case "tty":
		o := c.TTY
		if o.Now == nil {
			o.Now = now
		}
		tty = newTTYView(c.Out, o)
		views = append(views, tty)
	case "rawjson":
		views = append(views, newJSONView(c.Out, now, d.ID, d.LogDir))
	case "quiet":
	default:
		return nil, fmt.Errorf("unknown progress mode %q", c.Mode)
	}
	d.printer = newPrinter(now, views...)
	if tty != nil {
		tty.attach(d.printer)
		tty.run()
	}
	return d, nil
}

// StepLog returns the log file of the step that failed with err (err
// may wrap what the step failed with), or "" when no step did, or when
// logs are not kept.
func (d *Display) StepLog(err error) string {
	if d == nil || d.LogDir == "" || err == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.steps {
		if s.state == failed && errors.Is(err, s.err) {
			return StepLogPath(d.LogDir, s.n)
		}
	}
	return ""
}

// StepName returns the name of the step that failed with err, or "".
func (d *Display) StepName(err error) string {
	if d == nil || err == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.steps {
		if s.state == failed && errors.Is(err, s.err) {
			return s.name
		}
	}
	return ""
}
