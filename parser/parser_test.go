package parser

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		wantErr  string // substring; "" = parses
		wantLine int
		stages   int
	}{
		{name: "minimal", src: "FROM scratch\n", stages: 1},
		{name: "meta args", src: "ARG A=1\nFROM busybox:$A AS one\nFROM one\n", stages: 2},
		{name: "syntax ok", src: "# syntax=docker/dockerfile:1.7\nFROM scratch\n", stages: 1},
		{name: "syntax docker.io", src: "# syntax=docker.io/docker/dockerfile:1\nFROM scratch\n", stages: 1},
		{name: "other frontend", src: "# syntax=example.com/x:1\nFROM scratch\n", wantErr: "only the Dockerfile frontend", wantLine: 1},
		{name: "empty", src: "\n  \n", wantErr: "empty"},
		{name: "no from", src: "RUN true\n", wantErr: "no build stage"},
		{name: "unknown instruction", src: "FROM scratch\nRUNN x\n", wantErr: "unknown instruction", wantLine: 2},
		{name: "copy needs dest", src: "FROM scratch\n\nCOPY a\n", wantErr: "COPY requires at least two arguments", wantLine: 3},
		{name: "cache mount ok", src: "FROM scratch\nRUN --mount=type=cache,target=/c true\n", stages: 1},
		{name: "insecure", src: "FROM scratch\nRUN --security=insecure true\n", stages: 1},
		{name: "add url", src: "FROM scratch\nADD https://example.com/x /x\n", stages: 1},
		{name: "add git", src: "FROM scratch\nADD --keep-git-dir git@example.com:x.git#v1:sub /x\n", stages: 1},
		{name: "copy url", src: "FROM scratch\nCOPY https://example.com/x /x\n", wantErr: "use ADD", wantLine: 2},
		{name: "copy parents ok", src: "FROM scratch\nCOPY --parents a/./b /x/\n", stages: 1},
		{name: "copy exclude ok", src: "FROM scratch\nCOPY --exclude=*.md --exclude=!a.md . /x/\n", stages: 1},
		{name: "add exclude ok", src: "FROM scratch\nADD --exclude=*.md . /x/\n", stages: 1},
		{name: "copy link ok", src: "FROM scratch\nCOPY --link a /x/\n", stages: 1},
		{name: "add checksum", src: "FROM scratch\nADD --checksum=sha256:00 https://example.com/a /x\n", stages: 1},
		{name: "add unpack", src: "FROM scratch\nADD --unpack https://example.com/a.tgz /x/\n", stages: 1},
		{name: "bad network", src: "FROM scratch\nRUN --network=bridge true\n", wantErr: "network", wantLine: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df, err := Parse("Dockerfile", []byte(tt.src))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if len(df.Stages) != tt.stages {
					t.Errorf("got %d stages, want %d", len(df.Stages), tt.stages)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *parser.Error", err)
			}
			if tt.wantLine != 0 && pe.Start != tt.wantLine {
				t.Errorf("error on line %d, want %d (%v)", pe.Start, tt.wantLine, err)
			}
		})
	}
}
