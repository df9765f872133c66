package testutil

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestBusyboxImage(t *testing.T) {
	img := BusyboxImage(t)
	if err := validate.Image(img); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || strings.Join(cfg.Config.Cmd, " ") != "sh" ||
		strings.Join(cfg.Config.Env, " ") != DefaultPath {
		t.Errorf("config %+v", cfg)
	}

	rc, err := BusyboxLayer(t).Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	got := map[string]*tar.Header{}
	var order []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 0 {
			t.Errorf("%s: owner %d:%d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		got[h.Name] = h
		order = append(order, h.Name)
	}
	for _, want := range []struct {
		name string
		typ  byte
		mode int64
		link string
	}{
		{"./bin/busybox", tar.TypeReg, 0o755, ""},
		{"./bin/sh", tar.TypeSymlink, 0o777, "busybox"},
		{"./bin/ls", tar.TypeSymlink, 0o777, "busybox"},
		{"./etc/passwd", tar.TypeReg, 0o644, ""},
		{"./etc/group", tar.TypeReg, 0o644, ""},
		{"./tmp/", tar.TypeDir, 0o1777, ""},
		{"./root/", tar.TypeDir, 0o755, ""},
		{"./proc/", tar.TypeDir, 0o755, ""},
		{"./sys/", tar.TypeDir, 0o755, ""},
		{"./dev/", tar.TypeDir, 0o755, ""},
	} {
		h := got[want.name]
		if h == nil {
			t.Errorf("%s missing", want.name)
			continue
		}
		if h.Typeflag != want.typ || h.Mode != want.mode || h.Linkname != want.link {
			t.Errorf("%s: type %q mode %o link %q, want %q %o %q", want.name, h.Typeflag, h.Mode, h.Linkname, want.typ, want.mode, want.link)
		}
	}
	if len(got) < 100 {
		t.Errorf("only %d entries: applet symlinks missing?", len(got))
	}
}

// TestBusyboxMatchesPeers builds the tree peers.sh builds and tars it with
// GNU tar the same way: the fixture must be the same bytes, so that a
// kiln test and a conformance run start from the same base digest.
func TestBusyboxMatchesPeers(t *testing.T) {
	want, err := BusyboxRootfs()
	if errors.Is(err, ErrNoBusybox) {
		SkipHost(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("tar"); err != nil {
		SkipHost(t, "GNU tar not installed")
	}
	r := filepath.Join(t.TempDir(), "r")
	for _, d := range []string{"", "bin", "etc", "tmp", "root", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
		// Explicitly: the test must not depend on the umask.
		if err := os.Chmod(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(r, "tmp"), 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"bin/busybox": bin,
		"etc/passwd":  []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		"etc/group":   []byte("root:x:0:\nnogroup:x:65534:\n"),
	}
	for p, b := range files {
		if err := os.WriteFile(filepath.Join(r, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(r, "bin/busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			if err := os.Symlink("busybox", filepath.Join(r, "bin", a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// peers.sh runs as root; --owner/--group give a non-root run the
	// same 0:0 and change nothing for root.
	got, err := exec.Command("tar", "--numeric-owner", "--owner=0", "--group=0", "--mtime=@0", "--sort=name", "-C", r, "-cf", "-", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("fixture differs from GNU tar's output at byte %d (block %d); lengths %d and %d", i, i/512, len(want), len(got))
	}
}

func TestPushBusybox(t *testing.T) {
	reg := Registry(t)
	ref := PushBusybox(t, reg)
	if ref != reg+"/library/busybox:latest" {
		t.Errorf("reference %s", ref)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatal(err)
	}
	got, _ := img.Digest()
	want, _ := BusyboxImage(t).Digest()
	if got != want {
		t.Errorf("pulled %s, pushed %s", got, want)
	}
}
