package serve

import (
	"encoding/json"
	"net/http"
)

// messages writes the JSON message stream dockerd answers long requests
// with (build, load, push, pull): 200 and the content type with the
// first message, one object a line, each flushed as it is written so
// that clients show progress live. Its users hold their own lock.
type messages struct {
	w       http.ResponseWriter
	enc     *json.Encoder
	started bool
}

func newMessages(w http.ResponseWriter) messages {
	return messages{w: w, enc: json.NewEncoder(w)}
}

// send writes m. A write error is the client gone: the request's
// context is cancelled then, which stops the work.
func (m *messages) send(v any) {
	if !m.started {
		m.w.Header().Set("Content-Type", "application/json")
		m.w.WriteHeader(http.StatusOK)
		m.started = true
	}
	m.enc.Encode(v)
	if f, ok := m.w.(http.Flusher); ok {
		f.Flush()
	}
}
