package export

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestOCILayout writes several images into one layout directory, as
// repeated `-o type=oci,dest=DIR,tar=false` builds do: a name moves to the
// newest image, other entries stay, and every image stays readable.
func TestOCILayout(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "layout")
	a, b, c := randomImage(t), randomImage(t), randomImage(t)
	steps := []struct {
		img   v1.Image
		names []string
		want  []string // "digest-of-image name tag" entries after the step, in order
	}{
		{a, []string{"app:1"}, []string{"a docker.io/library/app:1 1"}},
		{b, []string{"example.com/x/y:2", "app:edge"}, []string{"a docker.io/library/app:1 1", "b example.com/x/y:2 2", "b docker.io/library/app:edge edge"}},
		{c, []string{"app:1"}, []string{"b example.com/x/y:2 2", "b docker.io/library/app:edge edge", "c docker.io/library/app:1 1"}},
		{a, nil, []string{"b example.com/x/y:2 2", "b docker.io/library/app:edge edge", "c docker.io/library/app:1 1", "a  latest"}},
		{b, nil, []string{"b example.com/x/y:2 2", "b docker.io/library/app:edge edge", "c docker.io/library/app:1 1", "b  latest"}},
	}
	label := map[v1.Hash]string{}
	for i, img := range []v1.Image{a, b, c} {
		d, _ := img.Digest()
		label[d] = string(rune('a' + i))
	}
	for i, s := range steps {
		if err := OCILayout(ctx, s.img, dir, s.names); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		ii, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		im, err := ii.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range im.Manifests {
			got = append(got, label[m.Digest]+" "+m.Annotations[annotationImageName]+" "+m.Annotations[annotationRefName])
			img, err := ii.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(img); err != nil {
				t.Errorf("step %d: image %s: %v", i, label[m.Digest], err)
			}
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("step %d: index\n%s\nwant\n%s", i, strings.Join(got, "\n"), strings.Join(s.want, "\n"))
		}
	}
	for _, n := range dirNames(t, dir) {
		if n != "blobs" && n != "index.json" && n != "oci-layout" {
			t.Errorf("stray file %s in layout", n)
		}
	}
}

func TestOCILayoutRefusesOtherDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := OCILayout(context.Background(), randomImage(t), dir, nil)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("error %v, want a refusal to write into a non-layout directory", err)
	}
}
