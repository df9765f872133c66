package progress

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestWatchLayer reads a layer through WatchLayer and NewWriter and checks
// the plain view counted every byte.
func TestWatchLayer(t *testing.T) {
	l, err := random.Layer(4096, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	size, _ := l.Size()
	d, _ := l.Digest()
	c := newClock()
	var out bytes.Buffer
	p := newPrinter(c.now, newPlainView(&out))
	s := p.Step("[1/1] FROM example")
	rc, err := WatchLayer(s, l).Compressed()
	if err != nil {
		t.Fatal(err)
	}
	var sink bytes.Buffer
	if _, err := io.Copy(NewWriter(s, "export", &sink, size), rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	s.Done()
	got := out.String()
	// The compressed size of random bytes varies around 4.3kB.
	n := HumanBytes(size)
	for _, want := range []string{ShortDigest(d) + " " + n + " / " + n + " 0.0s done", "export " + n + " / " + n + " 0.0s done", "#1 DONE"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if int64(sink.Len()) != size {
		t.Errorf("copied %d bytes, want %d", sink.Len(), size)
	}
}

// TestWatchImage exports an image through WatchImage: the export is the
// same, and every layer is counted.
func TestWatchImage(t *testing.T) {
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p := newPrinter(newClock().now, newPlainView(&out))
	if err := validate.Image(WatchImage(p.Step("validating"), img)); err != nil {
		t.Fatalf("the watched image does not validate: %v", err)
	}
	out.Reset()
	s := p.Step("exporting to docker image.tar")
	watched := WatchImage(s, img)
	var tar bytes.Buffer
	if err := tarball.Write(nil, watched, &tar); err != nil {
		t.Fatal(err)
	}
	s.Done()
	ls, _ := img.Layers()
	for _, l := range ls {
		d, _ := l.Digest()
		if !regexp.MustCompile(ShortDigest(d) + ` \S+ / \S+ 0.0s done`).MatchString(out.String()) {
			t.Errorf("layer %s not counted:\n%s", d, out.String())
		}
	}
	want, _ := img.Digest()
	if got, _ := watched.Digest(); got != want {
		t.Errorf("digest %s, want %s", got, want)
	}
}
