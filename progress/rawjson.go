package progress

import (
	"encoding/json"
	"io"
	"time"
)

// EventVersion is the version of the rawjson schema (docs/progress.md);
// it changes only when a field changes meaning or goes away.
const EventVersion = 1

// Event is one line of --progress=rawjson. Which fields are set depends
// on Type; docs/progress.md lists them.
type Event struct {
	Type string    `json:"type"` // start, step, log, bytes, cached, done, error, canceled, message, summary
	Time time.Time `json:"time"`

	Version int    `json:"version,omitempty"` // start
	Build   string `json:"build,omitempty"`   // start: the build ID
	Logs    string `json:"logs,omitempty"`    // start: the build's log directory

	Step int    `json:"step,omitempty"` // every step event: the step's number, from 1
	Name string `json:"name,omitempty"` // step
	// Emulated is the platform a RUN step runs for under emulation
	// (QEMU); absent when it runs natively.
	Emulated string  `json:"emulated,omitempty"` // step
	Line     *string `json:"line,omitempty"`     // log, message: one line, without its newline

	ID      string `json:"id,omitempty"`      // bytes: which transfer of the step
	Current *int64 `json:"current,omitempty"` // bytes
	Total   *int64 `json:"total,omitempty"`   // bytes: 0 when unknown

	Duration *float64 `json:"duration,omitempty"` // done, error, canceled, summary: seconds
	Error    string   `json:"error,omitempty"`    // error

	Stats *EventStats `json:"stats,omitempty"` // summary
	Image *EventImage `json:"image,omitempty"` // summary
}

// EventStats counts the steps of a build, in a summary event.
type EventStats struct {
	Steps  int `json:"steps"`
	Cached int `json:"cached"`
	Run    int `json:"run"`
	Failed int `json:"failed"`
}

// EventImage is the image a build produced, in a summary event.
type EventImage struct {
	ID     string   `json:"id"`
	Digest string   `json:"digest,omitempty"`
	Size   int64    `json:"size,omitempty"`
	Layers int      `json:"layers"`
	Names  []string `json:"names,omitempty"`
}

type jsonView struct {
	enc *json.Encoder
	now func() time.Time
}

func newJSONView(w io.Writer, now func() time.Time, buildID, logDir string) *jsonView {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "&&" in a RUN reads better than "\u0026\u0026"
	v := &jsonView{enc: enc, now: now}
	v.emit(Event{Type: "start", Version: EventVersion, Build: buildID, Logs: logDir})
	return v
}

// emit writes one event; Encode ends it with a newline, and one Write per
// event keeps lines whole for a reader on a pipe.
func (v *jsonView) emit(e Event) {
	e.Time = v.now().UTC()
	_ = v.enc.Encode(e) // a consumer that went away must not fail the build
}

func seconds(d time.Duration) *float64 {
	f := d.Seconds()
	return &f
}

func (v *jsonView) start(s *step) {
	v.emit(Event{Type: "step", Step: s.n, Name: s.name, Emulated: s.info.Emulated})
}
func (v *jsonView) write(*step, []byte) {}
func (v *jsonView) line(s *step, l string) {
	v.emit(Event{Type: "log", Step: s.n, Line: &l})
}

func (v *jsonView) transfer(s *step, t *transfer) {
	cur, total := t.current, t.total
	v.emit(Event{Type: "bytes", Step: s.n, ID: t.id, Current: &cur, Total: &total})
}

func (v *jsonView) end(s *step) {
	switch s.state {
	case cached:
		v.emit(Event{Type: "cached", Step: s.n})
	case done:
		v.emit(Event{Type: "done", Step: s.n, Duration: seconds(s.elapsed())})
	case failed:
		v.emit(Event{Type: "error", Step: s.n, Duration: seconds(s.elapsed()), Error: s.err.Error()})
	case canceled:
		v.emit(Event{Type: "canceled", Step: s.n, Duration: seconds(s.elapsed())})
	}
}

func (v *jsonView) summary(st Stats, sum Summary) {
	e := Event{
		Type:     "summary",
		Duration: seconds(st.Duration),
		Stats:    &EventStats{Steps: st.Steps, Cached: st.Cached, Run: st.Run, Failed: st.Failed},
	}
	if sum.ImageID != "" {
		e.Image = &EventImage{ID: sum.ImageID, Digest: sum.Digest, Size: sum.Size, Layers: sum.Layers, Names: sum.Names}
	}
	v.emit(e)
}

func (v *jsonView) message(l string) { v.emit(Event{Type: "message", Line: &l}) }

func (v *jsonView) close() error { return nil }
