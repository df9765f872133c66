package remotecache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/registry"
)

// Target is one --cache-to.
type Target struct {
	// Type is "registry" (Ref), "local" (Dir) or "inline".
	Type string
	Ref  string
	Dir  string
	// Max exports every stage's steps (mode=max), not only the target
	// stage's chain.
	Max bool
	// Mounts exports the contents of the cache mounts of those steps
	// (mounts=true).
	Mounts bool
}

func (t Target) String() string {
	switch t.Type {
	case "local":
		return "type=local,dest=" + t.Dir
	case "inline":
		return "type=inline"
	}
	return "type=registry,ref=" + t.Ref
}

// Result says what an export did.
type Result struct {
	// Digest is the cache manifest's.
	Digest v1.Hash
	// Unchanged: the target already held exactly these records, and
	// nothing was written.
	Unchanged bool
	Records   int
	// Mounts is the number of cache mounts exported.
	Mounts int
}

// Export writes the cache of entries to a registry or local target. Blobs
// are written first and what names them last (the manifest; index.json,
// by rename), so a reader sees the old cache or the new one, never half of
// one. When the target already names the very same manifest, nothing is
// written: the cache's digest stays put.
func Export(ctx context.Context, res *registry.Resolver, store *cache.Store, t Target, entries []Entry, mounts []Mount) (Result, error) {
	img, _, err := build(store, entries, mounts)
	if err != nil {
		return Result{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return Result{}, err
	}
	out := Result{Digest: d, Records: countKeys(entries), Mounts: len(mounts)}
	switch t.Type {
	case "local":
		out.Unchanged, err = exportLocal(ctx, t.Dir, img)
		return out, err
	case "registry":
		n, err := res.Parse(t.Ref)
		if err != nil {
			return out, err
		}
		if desc, err := remote.Head(n, res.Options(ctx)...); err == nil && desc.Digest == d {
			out.Unchanged = true
			return out, nil
		}
		_, err = res.Push(ctx, img, []string{t.Ref})
		return out, err
	}
	return out, fmt.Errorf("exporting cache: type %q is not exported here", t.Type)
}

func countKeys(entries []Entry) int {
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.Key] = true
	}
	return len(seen)
}

// exportLocal writes img into the OCI layout dir and names it in
// index.json, replacing the cache named before.
func exportLocal(ctx context.Context, dir string, img v1.Image) (bool, error) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return false, fmt.Errorf("creating %s: %w", blobs, err)
	}
	ls, err := img.Layers()
	if err != nil {
		return false, err
	}
	for _, l := range ls {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		d, err := l.Digest()
		if err != nil {
			return false, err
		}
		if err := writeBlob(blobs, d, l.Compressed); err != nil {
			return false, err
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return false, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return false, err
	}
	for _, b := range [][]byte{cfg, raw} {
		h, _, err := v1.SHA256(bytes.NewReader(b))
		if err != nil {
			return false, err
		}
		if err := writeBlob(blobs, h, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }); err != nil {
			return false, err
		}
	}
	if err := writeIfAbsent(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return false, err
	}
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return false, err
	}
	idx := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIManifestSchema1, Digest: d, Size: int64(len(raw)), ArtifactType: ArtifactType,
		}},
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return false, err
	}
	p := filepath.Join(dir, "index.json")
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
		return true, nil
	}
	return false, writeAtomic(p, data)
}

// writeBlob stores a blob under its digest unless it is there, verified,
// through a temporary file renamed into place.
func writeBlob(blobs string, d v1.Hash, open func() (io.ReadCloser, error)) error {
	if _, err := parseSHA256(d.String()); err != nil {
		return err
	}
	p := filepath.Join(blobs, d.Hex)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	rc, err := open()
	if err != nil {
		return fmt.Errorf("reading blob %s: %w", d, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(blobs, ".tmp-")
	if err != nil {
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), rc); err != nil {
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return fmt.Errorf("writing blob %s: its bytes have digest sha256:%s", d, got)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	return nil
}

func writeIfAbsent(p string, data []byte) error {
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	return writeAtomic(p, data)
}

// writeAtomic replaces p by rename, after a sync: a reader sees the old
// file or the new one.
func writeAtomic(p string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}
