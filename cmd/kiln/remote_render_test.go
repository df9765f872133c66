package main

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/client"
	"github.com/kiln-build/kiln/progress"
)

// messages is a message stream from a list.
type messages []client.Message

func (m *messages) Next() (client.Message, error) {
	if len(*m) == 0 {
		return client.Message{}, io.EOF
	}
	first := (*m)[0]
	*m = (*m)[1:]
	return first, nil
}

func streamOf(lines ...string) *messages {
	var m messages
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "aux "):
			m = append(m, client.Message{Aux: json.RawMessage(`{"ID":"` + strings.TrimPrefix(l, "aux ") + `"}`)})
		case strings.HasPrefix(l, "error "):
			msg := strings.TrimPrefix(l, "error ")
			m = append(m, client.Message{Error: msg, ErrorDetail: &client.ErrorDetail{Message: msg}})
		default:
			m = append(m, client.Message{Stream: l})
		}
	}
	return &m
}

// TestRemoteRender: the server's plain text is read back into steps and
// drawn again by the local display; the server's summary becomes the
// local one, docker's "Successfully" lines are dropped, a stream error
// is returned.
func TestRemoteRender(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stream  *messages
		id, err string
		want    string
	}{
		{
			name: "success",
			stream: streamOf("#1 [1/3] FROM busybox\n", "#1 DONE 0.1s\n", "#2 [2/3] RUN echo hi\n", "#2 0.012 hi\n#2 0.013 \n",
				"#2 DONE 0.3s\n", "#3 [3/3] COPY f /f\n", "#3 CACHED\n",
				"#4 exporting\n", "#4 sha256:abc 1.2MB / 3.4MB 0.5s\n", "#4 sha256:abc 3.4MB / 3.4MB 0.9s done\n", "#4 DONE 1.0s\n",
				"\n", "Built in 1.3s: 4 steps (1 cached, 3 run), 3 layers, 1.1MB\n", "image sha256:feed\n", "manifest sha256:beef\n",
				"aux sha256:feed", "Successfully built feed\n", "Successfully tagged x:latest\n"),
			id: "sha256:feed",
			want: "#1 [1/3] FROM busybox\n#1 DONE 0.0s\n#2 [2/3] RUN echo hi\n#2 0.000 hi\n#2 0.000 \n#2 DONE 0.0s\n" +
				"#3 [3/3] COPY f /f\n#3 CACHED\n#4 exporting\n#4 sha256:abc 3.4MB / 3.4MB 0.0s done\n#4 DONE 0.0s\n" +
				"\nBuilt in 0.0s: 4 steps (1 cached, 3 run), 3 layers, 1.1MB\nimage sha256:feed\nmanifest sha256:beef\nnamed x\n",
		},
		{
			name: "failure",
			stream: streamOf("#1 [1/2] RUN exit 3\n", "#1 ERROR: exit code: 3\n", "Dockerfile:2\n", "--------------------\n",
				" 2 | >>> RUN exit 3\n", "--------------------\n", "ERROR: Dockerfile:2: exit code: 3\n", "error Dockerfile:2: exit code: 3"),
			err:  "Dockerfile:2: exit code: 3",
			want: "#1 [1/2] RUN exit 3\n#1 ERROR: exit code: 3\nDockerfile:2\n--------------------\n 2 | >>> RUN exit 3\n--------------------\nERROR: Dockerfile:2: exit code: 3\n",
		},
		{
			name:   "cut off",
			stream: streamOf("#1 [1/1] RUN sleep 9\n", "#1 0.100 partial"),
			err:    "without an image ID",
			want:   "#1 [1/1] RUN sleep 9\n#1 0.000 partial\n#1 CANCELED\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			now := time.Unix(1700000000, 0)
			d, err := progress.New(progress.Config{Mode: "plain", Out: &out, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			r := newRemoteRender(d)
			id, err := r.run(tc.stream)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want %q", err, tc.err)
				}
				var se *client.StreamError
				if errors.As(err, &se) && !r.saidError(se.Message) {
					t.Errorf("the stream's ERROR: line was not recognised as the error's")
				}
			} else {
				if err != nil || id != tc.id {
					t.Fatalf("id %q, %v; want %q", id, err, tc.id)
				}
				sum := r.summary
				sum.ImageID, sum.Names = id, []string{"x"}
				progress.Summarize(d, sum)
			}
			progress.Close(d)
			if out.String() != tc.want {
				t.Errorf("display\n%s\nwant\n%s", out.String(), tc.want)
			}
		})
	}
}
