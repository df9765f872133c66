package export

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// canary is a host directory with a subdirectory and a file that an export
// must leave exactly as they were: content, mode, owner, mtime, xattrs.
type canary struct {
	dir   string
	state map[string]string
}

var canaryTime = time.Unix(1500000000, 0)

func newCanary(t *testing.T, dir string) *canary {
	t.Helper()
	for _, d := range []string{dir, filepath.Join(dir, "x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := filepath.Join(dir, "x", "file")
	if err := os.WriteFile(f, []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f, filepath.Join(dir, "x"), dir} {
		if err := unix.Lsetxattr(p, "user.canary", []byte("1"), 0); err != nil {
			t.Logf("no user xattrs here: %v", err)
		}
		if err := os.Chtimes(p, canaryTime, canaryTime); err != nil {
			t.Fatal(err)
		}
	}
	c := &canary{dir: dir}
	c.state = c.snapshot(t)
	return c
}

func (c *canary) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(c.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			out[p] = err.Error()
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		buf := make([]byte, 64)
		n, _ := unix.Lgetxattr(p, "user.canary", buf)
		var body []byte
		if fi.Mode().IsRegular() {
			body, _ = os.ReadFile(p)
		}
		out[p] = fmtState(fi.Mode(), st.Uid, st.Gid, fi.ModTime(), string(buf[:max(n, 0)]), string(body))
		return nil
	})
	return out
}

func fmtState(mode os.FileMode, uid, gid uint32, mtime time.Time, xattr, body string) string {
	return mode.String() + " " + itoa(uid) + ":" + itoa(gid) + " " + mtime.UTC().String() + " x=" + xattr + " " + body
}

func itoa(u uint32) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + u%10)}, b...)
		if u /= 10; u == 0 {
			return string(b)
		}
	}
}

// check fails the test if anything under the canary changed.
func (c *canary) check(t *testing.T) {
	t.Helper()
	now := c.snapshot(t)
	for p, want := range c.state {
		if got := now[p]; got != want {
			t.Errorf("host canary %s changed:\n got %s\nwant %s", p, got, want)
		}
	}
	for p := range now {
		if _, ok := c.state[p]; !ok {
			t.Errorf("host canary gained %s", p)
		}
	}
}

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
			c := newCanary(t, filepath.Join(base, "victim"))
			img := swapImage(t, c.dir)
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
			c.check(t)
			if typ != "tar" {
				if l, err := os.Readlink(filepath.Join(base, "out", "a")); err != nil || l != c.dir {
					t.Errorf("out/a -> %q %v, want the image's symlink", l, err)
				}
			}
		})
	}
}
