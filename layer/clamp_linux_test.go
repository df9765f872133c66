package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// stampAll sets the mtime of every path below root (not root) to tm,
// deepest first.
func stampAll(t *testing.T, root string, tm time.Time) {
	t.Helper()
	var paths []string
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if p != root {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := setTimes(paths[i], tm, tm); err != nil {
			t.Fatal(err)
		}
	}
}

func writeTarClamped(t *testing.T, dir string, clamp time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTarWith(context.Background(), dir, &buf, TarOptions{ClampMtime: &clamp}); err != nil {
		t.Fatalf("WriteTarWith(%s): %v", dir, err)
	}
	return buf.Bytes()
}

// TestWriteTarClamp checks SOURCE_DATE_EPOCH's rule in the tar writer: a
// tree written at two different times (all mtimes after the epoch) gives
// the same bytes, every entry's mtime is at most the epoch, an older mtime
// is kept, the files on disk are untouched, and no header carries an
// access or change time.
func TestWriteTarClamp(t *testing.T) {
	requireRoot(t)
	epoch := time.Unix(1710000000, 0)
	older := time.Unix(1600000000, 0)
	for _, tc := range treeCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, tc.nodes)

			stampAll(t, dir, epoch.Add(time.Hour))
			first := writeTarClamped(t, dir, epoch)
			stampAll(t, dir, epoch.Add(48*time.Hour+time.Second))
			second := writeTarClamped(t, dir, epoch)
			if !bytes.Equal(first, second) {
				t.Fatalf("clamped tars of the same tree written at different times differ:\n%s---\n%s", listTar(t, first), listTar(t, second))
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				info, err := e.Info()
				if err != nil {
					t.Fatal(err)
				}
				if !info.ModTime().Equal(epoch.Add(48*time.Hour + time.Second)) {
					t.Errorf("%s: mtime on disk changed to %v", e.Name(), info.ModTime())
				}
			}

			stampAll(t, dir, older)
			kept := writeTarClamped(t, dir, epoch)
			unclamped := writeTar(t, dir)
			if !bytes.Equal(kept, unclamped) {
				t.Errorf("a tree older than the epoch changed under the clamp")
			}

			for _, b := range [][]byte{first, kept} {
				tr := tar.NewReader(bytes.NewReader(b))
				for {
					hdr, err := tr.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if hdr.ModTime.After(epoch) {
						t.Errorf("%s: mtime %v after the epoch %v", hdr.Name, hdr.ModTime, epoch)
					}
					if !hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() {
						t.Errorf("%s: atime/ctime written (%v, %v)", hdr.Name, hdr.AccessTime, hdr.ChangeTime)
					}
					for _, k := range []string{"atime", "ctime", "mtime"} {
						if v, ok := hdr.PAXRecords[k]; ok {
							t.Errorf("%s: PAX record %s=%s (times are whole seconds in the header)", hdr.Name, k, v)
						}
					}
				}
			}
		})
	}
}
