package export

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fakeCopier is a blob that copies itself into a file, as the store's do.
type fakeCopier struct {
	*bytes.Reader
	digest v1.Hash
	fail   error
}

func (f *fakeCopier) Close() error            { return nil }
func (f *fakeCopier) VerifiesDigest() v1.Hash { return f.digest }
func (f *fakeCopier) CopyTo(_ context.Context, dst *os.File) (int64, error) {
	if f.fail != nil {
		return 0, f.fail
	}
	return io.Copy(dst, f.Reader)
}

// TestCopyBlobInKernel: an archive whose large blob is copied file to file
// has the same bytes as one written through tar.Writer; a copy that fails
// its digest fails the entry.
func TestCopyBlobInKernel(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+7) // not a whole block
	d := sha256Hash(data)
	mk := func(fail error) blob {
		return blob{digest: d, size: int64(len(data)), open: func() (io.ReadCloser, error) {
			return &fakeCopier{Reader: bytes.NewReader(data), digest: d, fail: fail}, nil
		}}
	}
	write := func(t *testing.T, kernel bool, b blob) ([]byte, error) {
		dest := filepath.Join(t.TempDir(), "out.tar")
		err := writeFileAtomic(context.Background(), dest, func(w io.Writer) error {
			tw := tar.NewWriter(w)
			if err := writeFile(tw, "a", []byte("before"), 0o644); err != nil {
				return err
			}
			hdr := fileHeader(b.layoutPath(), b.size, 0o444)
			done := false
			if kernel {
				rc, err := b.open()
				if err != nil {
					return err
				}
				defer rc.Close()
				if done, err = copyBlobInKernel(context.Background(), w, tw, hdr, b, rc); err != nil {
					return err
				}
				if !done {
					t.Fatal("the blob was not copied in the kernel")
				}
			}
			if !done {
				if err := tw.WriteHeader(hdr); err != nil {
					return err
				}
				if err := copyBlob(context.Background(), tw, b); err != nil {
					return err
				}
			}
			if err := writeFile(tw, "z", []byte("after"), 0o644); err != nil {
				return err
			}
			return tw.Close()
		})
		if err != nil {
			return nil, err
		}
		return os.ReadFile(dest)
	}
	viaTar, err := write(t, false, mk(nil))
	if err != nil {
		t.Fatal(err)
	}
	inKernel, err := write(t, true, mk(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaTar, inKernel) {
		t.Fatalf("archives differ: %d bytes through tar.Writer, %d copied in the kernel", len(viaTar), len(inKernel))
	}
	damaged := errors.New("blob is damaged")
	if _, err := write(t, true, mk(damaged)); !errors.Is(err, damaged) {
		t.Fatalf("a damaged blob: got %v, want the copy's error", err)
	}
}

// TestWriteFileAtomicReplaces: writing over an existing archive leaves the
// new bytes under the name and nothing else in the directory; a failed
// write leaves the old file as it was.
func TestWriteFileAtomicReplaces(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "out.tar")
	oldBytes := bytes.Repeat([]byte("old "), 5<<20) // 20 MiB: large enough to go aside
	if err := os.WriteFile(dest, oldBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(data string, fail error) error {
		return writeFileAtomic(context.Background(), dest, func(w io.Writer) error {
			if _, err := io.WriteString(w, data); err != nil {
				return err
			}
			return fail
		})
	}
	if err := write("new", errors.New("stopped")); err == nil {
		t.Fatal("a failed write reported success")
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, oldBytes) {
		t.Fatalf("after a failed write: %d bytes, want the old file", len(got))
	}
	if err := write("new", nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); string(got) != "new" {
		t.Fatalf("after the write: %q, want the new bytes", got)
	}
	old := TakeReplaced() // the old file, for the command to remove
	if len(old) != 1 || !IsReplacedName(old[0]) {
		t.Fatalf("replaced files %v, want the old out.tar moved aside", old)
	}
	if got, _ := os.ReadFile(old[0]); !bytes.Equal(got, oldBytes) {
		t.Fatalf("the file moved aside holds %d bytes, want the old ones", len(got))
	}
	os.Remove(old[0])
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only out.tar", names)
	}
}
