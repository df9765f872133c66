package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSum(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files []string
		top   int
		want  []string // the lines after the header
	}{
		{
			name:  "one file",
			files: []string{"testdata/build.json"},
			want: []string{
				"build                                             1       10.00      10.00      10.00",
				"step                                              2        9.00       4.50       5.00",
				"commit                                            2        2.00       1.00       1.50",
			},
		},
		{
			name:  "two files, top 1",
			files: []string{"testdata/build.json", "testdata/build.json"},
			top:   1,
			want: []string{
				"build                                             2       20.00      10.00      10.00",
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := run(tt.files, tt.top, &out); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if !strings.HasPrefix(lines[0], "phase") {
				t.Errorf("no header: %q", lines[0])
			}
			if got := strings.Join(lines[1:], "\n"); got != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", got, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestSumRefuses(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, files := range [][]string{{filepath.Join(t.TempDir(), "missing.json")}, {bad}} {
		if err := run(files, 0, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%v) succeeded", files)
		}
	}
}
