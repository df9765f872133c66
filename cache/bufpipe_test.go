package cache

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
)

// TestBufPipe: what the writer writes comes out whole and in order,
// through WriteTo and through Read; the writer's error follows its bytes;
// a reader that stops unblocks the writer with its error.
func TestBufPipe(t *testing.T) {
	data := make([]byte, 5*bufPipeSlice+123)
	rand.New(rand.NewSource(1)).Read(data)
	for _, tc := range []struct {
		name   string
		useTo  bool
		werr   error
		chunks int
	}{
		{"WriteTo", true, nil, 7},
		{"Read", false, nil, 1000},
		{"WriteTo, writer failed", true, errors.New("walk failed"), 3},
		{"Read, writer failed", false, errors.New("walk failed"), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newBufPipe()
			go func() {
				b := data
				step := len(data)/tc.chunks + 1
				for len(b) > 0 {
					n := min(step, len(b))
					if _, err := p.Write(b[:n]); err != nil {
						t.Error(err)
						return
					}
					b = b[n:]
				}
				p.CloseWithError(tc.werr)
			}()
			var out bytes.Buffer
			var err error
			if tc.useTo {
				_, err = p.WriteTo(&out)
			} else {
				_, err = io.Copy(&out, struct{ io.Reader }{p})
			}
			if !errors.Is(err, tc.werr) {
				t.Fatalf("error %v, want %v", err, tc.werr)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("got %d bytes, want the %d written", out.Len(), len(data))
			}
		})
	}
	t.Run("reader stops", func(t *testing.T) {
		p := newBufPipe()
		stopped := errors.New("compression stopped")
		p.CloseRead(stopped)
		var err error
		for i := 0; i < 2*bufPipeSlots && err == nil; i++ {
			_, err = p.Write(make([]byte, bufPipeSlice))
		}
		if !errors.Is(err, stopped) {
			t.Fatalf("writer after the reader stopped: %v, want %v", err, stopped)
		}
	})
}
