package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Message is one message of the JSON stream that POST /build and POST
// /images/{name}/push answer with, one JSON object per line.
type Message struct {
	// Stream is build output text, newline included.
	Stream string `json:"stream,omitempty"`
	// Status, ID, Progress and ProgressDetail are a pull's or push's
	// progress: "Pushing" of layer ID, current of total bytes.
	Status         string          `json:"status,omitempty"`
	ID             string          `json:"id,omitempty"`
	Progress       string          `json:"progress,omitempty"`
	ProgressDetail *ProgressDetail `json:"progressDetail,omitempty"`
	// Aux carries a result: the image ID of a build ({"ID": …}), the
	// digest of a push ({"Tag", "Digest", "Size"}).
	Aux json.RawMessage `json:"aux,omitempty"`
	// ErrorDetail (and Error, its older spelling) ends a failed stream.
	ErrorDetail *ErrorDetail `json:"errorDetail,omitempty"`
	Error       string       `json:"error,omitempty"`
}

// ProgressDetail is the bytes moved of a transfer.
type ProgressDetail struct {
	Current int64 `json:"current,omitempty"`
	Total   int64 `json:"total,omitempty"`
}

// ErrorDetail is the error a stream ends with.
type ErrorDetail struct {
	Code    int    `json:"code,omitempty"`
	Message string `json:"message"`
}

// StreamError is the error a stream ended with: the build or push
// failed on the server.
type StreamError struct{ Message string }

func (e *StreamError) Error() string { return e.Message }

// Err returns the message's error, nil when it reports none.
func (m Message) Err() error {
	switch {
	case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
		return &StreamError{Message: m.ErrorDetail.Message}
	case m.Error != "":
		return &StreamError{Message: m.Error}
	}
	return nil
}

// Stream reads a JSON message stream. Close it when done; closing it
// early hangs up, which cancels what the server is doing for it.
type Stream struct {
	body io.ReadCloser
	dec  *json.Decoder
}

func newStream(body io.ReadCloser) *Stream {
	return &Stream{body: body, dec: json.NewDecoder(body)}
}

// Next returns the next message, or io.EOF after the last one.
func (s *Stream) Next() (Message, error) {
	var m Message
	err := s.dec.Decode(&m)
	if errors.Is(err, io.EOF) {
		return m, io.EOF
	}
	if err != nil {
		return m, fmt.Errorf("reading the server's message stream: %w", err)
	}
	return m, nil
}

// Close hangs up.
func (s *Stream) Close() error { return s.body.Close() }

// BuildAux is the aux message of a build: the image it made.
type BuildAux struct {
	ID string `json:"ID"`
}

// PushAux is the aux message of a push: what the registry now holds.
type PushAux struct {
	Tag    string `json:"Tag"`
	Digest string `json:"Digest"`
	Size   int64  `json:"Size"`
}
