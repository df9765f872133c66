package cache

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

// TestLockOutlivesStoreObject: a command that keeps only an image it read
// from the store (as push and save do) keeps the store locked against
// prune through garbage collections, until it closes the store.
func TestLockOutlivesStoreObject(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "root")
	reader, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := reader.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	buildTree(t, dir)
	info, _, err := reader.CommitDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, reader.Layer(info, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.PutImage(ctx, []string{"app"}, img); err != nil {
		t.Fatal(err)
	}
	stored, ok, err := reader.Image("app")
	if err != nil || !ok {
		t.Fatalf("Image: %v %v", ok, err)
	}
	// Nothing of reader but the image stays reachable; its lock is closed
	// at the end by descriptor.
	fd := reader.lock.fd
	reader = nil
	for i := 0; i < 3; i++ {
		runtime.GC() // runs the finalizers of whatever is unreachable
	}

	pruner, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer pruner.Close()
	if _, err := pruner.Prune(ctx, PruneOptions{All: true}); !errors.Is(err, ErrStoreBusy) {
		t.Fatalf("prune while another Store is open (unreferenced, after GC): %v, want ErrStoreBusy", err)
	}
	layers, err := stored.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("reading the layer after GC: %v", err)
	}
	rc.Close()

	if err := unix.Close(fd); err != nil {
		t.Fatal(err)
	}
	if _, err := pruner.Prune(ctx, PruneOptions{All: true}); err != nil {
		t.Fatalf("prune once the other Store is closed: %v", err)
	}
}
