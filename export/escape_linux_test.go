package export

import (
	"context"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// swapImage is issue 9's first finding: a directory made in one layer and
// replaced by a symlink to a host directory in a later one.
//
//	RUN mkdir -p /a/x && chmod 777 /a/x && chown 1234:1234 /a/x
//	RUN rm -rf /a && ln -s /tmp/victim /a
func swapImage(t *testing.T, victim string) v1.Image {
	x := dir("a/x/", 0o777)
	x.uid, x.gid = 1234, 1234
	x.xattrs = map[string]string{"user.evil": "1"}
	return imageOf(t,
		gzLayer(t, dir("a/", 0o755), x, file("a/x/file", "evil")),
		gzLayer(t, file(".wh.a", ""), symlink("a", victim)),
	)
}

// TestExportDirSwapLeavesHostAlone: no output type may change a host
// directory that a later layer's symlink points at.
func TestExportDirSwapLeavesHostAlone(t *testing.T) {
	for _, typ := range []string{"local", "local-existing", "tar"} {
		t.Run(typ, func(t *testing.T) {
			base := t.TempDir()
			c := testutil.NewCanary(t)
			img := swapImage(t, c.Dir)
			ctx := context.Background()
			var err error
			switch typ {
			case "local":
				err = Local(ctx, img, filepath.Join(base, "out"))
			case "local-existing":
				out := filepath.Join(base, "out")
				if err := os.Mkdir(out, 0o755); err != nil {
					t.Fatal(err)
				}
				err = Local(ctx, img, out)
			case "tar":
				err = RootfsTar(ctx, img, filepath.Join(base, "out.tar"))
			}
			if err != nil {
				t.Fatal(err)
			}
			c.Check(t)
			if typ != "tar" {
				if l, err := os.Readlink(filepath.Join(base, "out", "a")); err != nil || l != c.Dir {
					t.Errorf("out/a -> %q %v, want the image's symlink", l, err)
				}
			}
		})
	}
}
