package client

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestWriteContext: the archive holds what .dockerignore keeps (an
// exception inside an excluded directory included), the kept files
// whatever the patterns say, hardlinks and symlinks as such, and the
// extra files under their directories.
func TestWriteContext(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"Dockerfile":    "FROM scratch\n",
		".dockerignore": "secret.txt\nlogs/\n!logs/keep\nDockerfile\n*.tmp\n",
		"f":             "hello\n",
		"secret.txt":    "no\n",
		"x.tmp":         "no\n",
		"logs/a.log":    "no\n",
		"logs/keep":     "yes\n",
		"sub/g":         "g\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "h")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	spec := ContextSpec{
		Dir:      dir,
		Excludes: []string{"secret.txt", "logs/", "!logs/keep", "Dockerfile", "*.tmp"},
		Keep:     []string{"Dockerfile", ".dockerignore"},
		Extra:    []ExtraFile{{Name: ".dockerfile.0123/Dockerfile", Data: []byte("FROM scratch\n")}},
	}
	var b bytes.Buffer
	if err := WriteContext(context.Background(), &b, spec); err != nil {
		t.Fatal(err)
	}
	type entry struct {
		typ        byte
		link, data string
		mode       int64
	}
	got := map[string]entry{}
	var order []string
	tr := tar.NewReader(&b)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		got[hdr.Name] = entry{hdr.Typeflag, hdr.Linkname, string(data), hdr.Mode}
		order = append(order, hdr.Name)
	}
	want := map[string]entry{
		".dockerignore":               {tar.TypeReg, "", "secret.txt\nlogs/\n!logs/keep\nDockerfile\n*.tmp\n", 0o640},
		"Dockerfile":                  {tar.TypeReg, "", "FROM scratch\n", 0o640},
		"f":                           {tar.TypeReg, "", "hello\n", 0o640},
		"h":                           {tar.TypeLink, "f", "", 0o640},
		"l":                           {tar.TypeSymlink, "f", "", 0o777},
		"logs/":                       {tar.TypeDir, "", "", 0o755},
		"logs/keep":                   {tar.TypeReg, "", "yes\n", 0o640},
		"sub/":                        {tar.TypeDir, "", "", 0o755},
		"sub/g":                       {tar.TypeReg, "", "g\n", 0o640},
		".dockerfile.0123/":           {tar.TypeDir, "", "", 0o755},
		".dockerfile.0123/Dockerfile": {tar.TypeReg, "", "FROM scratch\n", 0o644},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("archive entries\n%v\nwant\n%v", got, want)
	}
	// a directory's entry comes before what is in it
	if i, j := indexOf(order, "logs/"), indexOf(order, "logs/keep"); i < 0 || i > j {
		t.Errorf("order %v", order)
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}
