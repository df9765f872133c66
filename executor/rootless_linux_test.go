package executor

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSubIDRanges(t *testing.T) {
	file := filepath.Join(t.TempDir(), "subuid")
	data := "# comment\nalice:100000:65536\n1001:200000:1000\nbob:300000:65536\nalice:400000:0\nalice:bad:10\nalice:500000:10\n"
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		uid  int
		want []idRange
	}{
		{"alice", 1001, []idRange{{100000, 65536}, {200000, 1000}, {500000, 10}}},
		{"bob", 1002, []idRange{{300000, 65536}}},
		{"carol", 1003, nil},
	}
	for _, tt := range tests {
		got, err := subIDRanges(file, tt.name, tt.uid)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("subIDRanges(%s, %d) = %v, want %v", tt.name, tt.uid, got, tt.want)
		}
	}
	if got, err := subIDRanges(filepath.Join(t.TempDir(), "none"), "alice", 1001); got != nil || err != nil {
		t.Errorf("missing file: %v, %v; want no ranges and no error", got, err)
	}
}
