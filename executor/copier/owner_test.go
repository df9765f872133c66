package copier

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-build/kiln/rooted"
)

func TestResolveOwner(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// /etc/passwd is an absolute symlink: it must resolve inside root.
	write("etc/group", "root:x:0:\n#staff:x:99:\nstaff:x:50:app\n")
	write("real/passwd", "root:x:0:0::/root:/bin/sh\n  app:x:1000:1001::/home/app:/bin/sh  \nbroken:x:abc\ndup:x:7:7::/:/bin/sh\ndup:x:8:8::/:/bin/sh\n")
	if err := os.Symlink("/real/passwd", filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}

	empty := t.TempDir()
	cases := []struct {
		root    string
		spec    string
		want    *owner
		wantErr bool
	}{
		{root: root, spec: "", want: nil},
		{root: root, spec: "app", want: &owner{1000, 1001}},
		{root: root, spec: "app:staff", want: &owner{1000, 50}},
		{root: root, spec: "app:", want: &owner{1000, 1001}},
		{root: root, spec: "app:7", want: &owner{1000, 7}},
		{root: root, spec: "1234", want: &owner{1234, 1234}},
		{root: root, spec: "1234:5678", want: &owner{1234, 5678}},
		{root: root, spec: "1234:staff", want: &owner{1234, 50}},
		{root: root, spec: "root", want: &owner{0, 0}},
		{root: root, spec: "root:staff", want: &owner{0, 50}},
		{root: root, spec: "dup", want: &owner{7, 7}},
		{root: root, spec: "broken", want: &owner{0, 0}},
		// BuildKit does not fail on unknown names: the id stays 0.
		{root: root, spec: "ghost", want: &owner{0, 0}},
		{root: root, spec: "1234:ghost", want: &owner{1234, 1234}},
		{root: root, spec: ":staff", want: &owner{0, 50}},
		{root: empty, spec: "app:staff", want: &owner{0, 0}},
		{root: empty, spec: "5:6", want: &owner{5, 6}},
	}
	for _, tc := range cases {
		r, err := rooted.Open(tc.root)
		if err != nil {
			t.Fatal(err)
		}
		got, err := resolveOwner(r, tc.spec)
		r.Close()
		if (err != nil) != tc.wantErr {
			t.Errorf("resolveOwner(%q): error %v", tc.spec, err)
			continue
		}
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("resolveOwner(%q) = %v, want %v", tc.spec, got, tc.want)
		}
	}
}
