package cache

import (
	"context"
	"io"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// readCounter counts the reads of its bytes.
type readCounter struct {
	v1.Layer
	reads *atomic.Int32
}

func (l readCounter) Compressed() (io.ReadCloser, error) {
	l.reads.Add(1)
	return l.Layer.Compressed()
}

// A lazy layer is read only by Materialize, once; the list handed in is
// left as it was; exporting it before reads it from where it lives.
func TestMaterialize(t *testing.T) {
	s := openStore(t)
	l, err := random.Layer(4<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	cl := readCounter{Layer: l, reads: &reads}
	diffID, _ := l.DiffID()
	digest, _ := l.Digest()
	size, _ := l.Size()
	lazy := []LayerInfo{{DiffID: diffID, Digest: digest, Size: size, MediaType: types.OCILayer, Remote: cl}}

	if got := s.Layer(lazy[0], ""); got.(*lazyLayer).Layer != cl {
		t.Fatalf("Layer of a lazy layer is %T, want the remote layer", got)
	}
	if reads.Load() != 0 {
		t.Fatal("describing a lazy layer read it")
	}
	out, err := s.Materialize(context.Background(), lazy, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Lazy() || out[0].Dir == "" || !lazy[0].Lazy() {
		t.Fatalf("Materialize gave %+v and left %+v", out[0], lazy[0])
	}
	if _, err := s.Materialize(context.Background(), lazy, nil); err != nil {
		t.Fatal(err)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("the layer was read %d times, want once", n)
	}
	if _, ok := s.Layer(lazy[0], "").(*storedLayer); !ok {
		t.Error("once stored, a lazy layer is still read from where it came from")
	}
}
