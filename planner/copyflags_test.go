package planner

import (
	"slices"
	"testing"

	"github.com/kiln-build/kiln/executor/copier"
)

func TestCopySources(t *testing.T) {
	tests := []struct {
		in      []string
		parents bool
		want    []string
	}{
		{[]string{"a/./b", "./x/../y"}, false, []string{"/a/b", "/y"}},
		{[]string{"a/b/c"}, true, []string{"/./a/b/c"}},
		{[]string{"/test/a/b/./c/d"}, true, []string{"/test/a/b/./c/d"}},
		{[]string{"/test/a/./b/./c"}, true, []string{"/test/a/./b/c"}},
		{[]string{"../../a/./../b"}, true, []string{"/a/./b"}},
		{[]string{"./test/a/b/c/d/."}, true, []string{"/./test/a/b/c/d"}},
		{[]string{"/test/a/b*/./c/**/e"}, true, []string{"/test/a/b*/./c/**/e"}},
	}
	for _, tt := range tests {
		got, err := copySources(tt.in, tt.parents)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("copySources(%q, %v) = %q, want %q", tt.in, tt.parents, got, tt.want)
		}
		if tt.parents {
			// the copier splits them back where dockerfile2llb does
			for i, s := range got {
				base, pattern := copier.SplitParents(s)
				wantBase, wantPattern := copier.SplitParents(tt.in[i])
				if base != wantBase || pattern != wantPattern {
					t.Errorf("SplitParents(%q) = %q %q, want %q %q (as written)", s, base, pattern, wantBase, wantPattern)
				}
			}
		}
	}
}

func TestChownByName(t *testing.T) {
	for in, want := range map[string]bool{
		"": false, "1000": false, "1000:1000": false, ":50": false, "1000:": false,
		"app": true, "app:1000": true, "1000:staff": true, "nobody:nogroup": true,
	} {
		if got := chownByName(in); got != want {
			t.Errorf("chownByName(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestLinkedKeys: a linked copy's key does not depend on the steps below
// it; the stage's key after it depends on both.
func TestLinkedKeys(t *testing.T) {
	sum := func(k *stepKey) string { k.add("dest", "/app/"); return k.sum() }
	if a, b := sum(newLinkedKey("copy", "parent-1")), sum(newLinkedKey("copy", "parent-2")); a != b {
		t.Errorf("linked keys differ with the parent: %s %s", a, b)
	}
	if a, b := sum(newLinkedKey("copy", "p")), sum(newStepKey("copy", "")); a == b {
		t.Error("a linked copy has the key of a plain copy on an empty parent")
	}
	chain := func(parent string) string {
		s := &stage{}
		k := newLinkedKey("copy", parent)
		chainLinked(s, k, sum(k))
		return s.key
	}
	if chain("parent-1") == chain("parent-2") {
		t.Error("the stage key after a linked copy does not depend on the steps below it")
	}
	s := &stage{key: "unchanged"}
	chainLinked(s, newStepKey("copy", "x"), "k")
	if s.key != "unchanged" {
		t.Error("chainLinked changed the key after a plain step")
	}
}

// TestSelectionKey: --exclude and --parents reach the key only when set,
// so copies without them keep their keys.
func TestSelectionKey(t *testing.T) {
	key := func(sel copier.Selection) string {
		k := newStepKey("copy", "p")
		addSelection(k, sel)
		return k.sum()
	}
	plain := newStepKey("copy", "p").sum()
	if key(copier.Selection{}) != plain {
		t.Error("an empty selection changed the key")
	}
	keys := map[string]copier.Selection{}
	for _, sel := range []copier.Selection{
		{}, {Parents: true}, {Excludes: []string{"*.md"}}, {Excludes: []string{"*.md", "!a.md"}},
		{Excludes: []string{"*.md"}, Parents: true}, {Excludes: []string{"*.m", "d"}},
	} {
		k := key(sel)
		if prev, ok := keys[k]; ok {
			t.Errorf("selections %+v and %+v have the same key", prev, sel)
		}
		keys[k] = sel
	}
}
