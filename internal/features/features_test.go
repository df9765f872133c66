package features

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestLoadSave(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the cache is keyed by Linux's boot id")
	}
	type answer struct{ V2 bool }
	tests := []struct {
		name  string
		tweak func(t *testing.T, root string)
		scope string
		found bool
	}{
		{"same boot, kiln and scope", func(*testing.T, string) {}, "cg", true},
		{"another scope", func(*testing.T, string) {}, "other", false},
		{"another boot or kiln", func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, file), []byte(`{"stamp":"old boot","entries":{"cgroups":{"scope":"cg","value":{"V2":true}}}}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "cg", false},
		{"damaged file", func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, file), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "cg", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(reset)
			root := t.TempDir()
			Use(root)
			Save("cgroups", "cg", answer{V2: true})
			tt.tweak(t, root)
			reset() // a later kiln: reads the file again
			Use(root)
			var got answer
			if ok := Load("cgroups", tt.scope, &got); ok != tt.found || (ok && !got.V2) {
				t.Errorf("Load = %v, %+v; want found %v", ok, got, tt.found)
			}
		})
	}
}

// An unchanged answer is not written again: a build that probes nothing
// writes nothing.
func TestSaveUnchangedWritesNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the cache is keyed by Linux's boot id")
	}
	t.Cleanup(reset)
	root := t.TempDir()
	Use(root)
	Save("x", "s", 1)
	p := filepath.Join(root, file)
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	reset()
	Use(root)
	Save("x", "s", 1)
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("an unchanged answer rewrote the cache")
	}
}

// Without a store, nothing is kept and nothing is found.
func TestNoStore(t *testing.T) {
	t.Cleanup(reset)
	reset()
	Save("x", "s", 1)
	var v int
	if Load("x", "s", &v) {
		t.Error("found an answer with no store")
	}
}
