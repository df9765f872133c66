package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-build/kiln/internal/testutil"
)

// rootlessDockerfile exercises what a user namespace changes: chown to
// IDs of the subuid range, whiteouts, an opaque directory, a non-root
// USER, a COPY --chown.
const rootlessDockerfile = `FROM {{BASE}} AS other
RUN --network=none ls /sys/class/net > /net && echo x > /x
RUN --mount=type=cache,target=/cache echo c > /cache/c && cp /cache/c /cached
RUN --mount=type=tmpfs,target=/t touch /t/a && ls /t > /tmpfs

FROM {{BASE}}
RUN mkdir -p /data/keep /data/gone && echo a > /data/keep/a && echo b > /data/gone/b \
 && chown -R 1234:2345 /data && chown nobody:65534 /data/keep/a && chmod 4755 /data/keep/a
RUN rm -rf /data/gone && mkdir /data/gone && echo c > /data/gone/c && chown 70:80 /data/gone/c \
 && rm /data/keep/a && rm -rf /root && mkdir -m 1777 /scratch && touch -d @0 /scratch
COPY --chown=nobody:65534 hello.txt /scratch/hello.txt
COPY --from=other /net /x /cached /tmpfs /other/
RUN test -c /dev/null && test -d /sys/class/net && ! touch /sys/kiln 2>/dev/null && echo ok > /checked
USER nobody
RUN echo hi > /scratch/by-nobody && id > /scratch/id && ls -ln /scratch /data > /scratch/ls
`

// TestRootlessBuild builds as a throwaway normal user, in kiln's user
// namespace, and as root: the images must be the same.
func TestRootlessBuild(t *testing.T) {
	needRootless(t)
	name, uid, gid := throwawayUser(t)
	dir := userTree(t, "kiln-rootless-", uid, gid)
	bin, home, root, ctxDir, out := filepath.Join(dir("bin"), "kiln"), dir("home"), dir("root"), dir("ctx"), dir("out")
	copyFile(t, kilnBin, bin, 0o755)

	reg := registryWithBases(t)
	df := strings.ReplaceAll(rootlessDockerfile, "{{BASE}}", reg+"/library/busybox:latest")
	writeFile(t, filepath.Join(ctxDir, "Dockerfile"), df)
	writeFile(t, filepath.Join(ctxDir, "hello.txt"), "hello\n")
	for _, f := range []string{"Dockerfile", "hello.txt"} {
		must(t, os.Chown(filepath.Join(ctxDir, f), uid, gid))
	}

	// RUN's default network needs /dev/net/tun open to the user, as most
	// systems have it; where it is not, the build must say so, and the
	// rest is tested without a network.
	var netArgs []string
	tun := exec.Command("sh", "-c", "exec 3<>/dev/net/tun")
	tun.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if tun.Run() != nil {
		t.Logf("/dev/net/tun is closed to users here: the rootless build runs with --network=none")
		netArgs = []string{"--network=none"}
		cmd := exec.Command(bin, "build", "--root", root, "--progress=plain", ctxDir)
		cmd.Dir = home
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "USER=" + name, "KILN_SYNC=wait"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "needs /dev/net/tun") {
			t.Errorf("rootless build without /dev/net/tun: %v, want an error about it:\n%s", err, out)
		}
	}

	userOut := filepath.Join(out, "user.tar")
	cmd := exec.Command(bin, append(append([]string{"build", "--root", root, "--progress=plain", "-o", "type=docker,dest=" + userOut}, netArgs...), ctxDir)...)
	cmd.Dir = home
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "USER=" + name, "KILN_SYNC=wait"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("rootless build: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "without a cgroup") {
		// Not an error: a host may delegate cgroups to users.
		t.Logf("rootless build ran with cgroups:\n%s", log.String())
	}

	rootOut := filepath.Join(t.TempDir(), "root.tar")
	if log, code := kiln(t, append(append([]string{"build", "--root", t.TempDir(), "--progress=plain", "-o", "type=docker,dest=" + rootOut}, netArgs...), ctxDir)...); code != 0 {
		t.Fatalf("root build: exit %d\n%s", code, log)
	}
	sameImage(t, userOut, rootOut)
	checkRootlessLayers(t, userOut)
}

// checkRootlessLayers looks into the rootless image's layer tars: the
// deletions are there in OCI spelling, no overlay bookkeeping of the user
// namespace (user.overlay.*) leaked into them, and the last RUN ran as
// nobody.
func checkRootlessLayers(t *testing.T, archive string) {
	t.Helper()
	img, err := tarball.ImageFromPath(archive, nil)
	must(t, err)
	layers, err := img.Layers()
	must(t, err)
	seen := map[string]bool{}
	for _, l := range layers[1:] { // the base's layer is its own blob
		rc, err := l.Uncompressed()
		must(t, err)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, err)
			seen[path.Clean(h.Name)] = true
			for k := range h.PAXRecords {
				if strings.HasPrefix(k, "SCHILY.xattr.user.overlay.") || strings.HasPrefix(k, "SCHILY.xattr.trusted.") {
					t.Errorf("%s carries %s", h.Name, k)
				}
			}
			if path.Clean(h.Name) == "scratch/id" {
				b, _ := io.ReadAll(tr)
				if !strings.HasPrefix(string(b), "uid=65534(nobody) gid=65534") {
					t.Errorf("/scratch/id = %q, want nobody's", b)
				}
			}
		}
		rc.Close()
	}
	for _, want := range []string{"data/gone/.wh..wh..opq", "data/keep/.wh.a", ".wh.root", "scratch/id"} {
		if !seen[want] {
			t.Errorf("no %s in the rootless image's layers", want)
		}
	}
}

// TestRootlessNoRange: a user without a subuid range is told how to get
// one.
func TestRootlessNoRange(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("newuidmap"); err != nil {
		testutil.SkipHostf(t, "rootless builds need newuidmap (package uidmap): %v", err)
	}
	name := fmt.Sprintf("kilnnr%d", os.Getpid())
	if out, err := exec.Command("useradd", "-M", "-s", "/bin/false", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	must(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	top, err := os.MkdirTemp("", "kiln-rootless-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(top) })
	must(t, os.Chmod(top, 0o755))
	bin := filepath.Join(top, "kiln")
	copyFile(t, kilnBin, bin, 0o755)
	writeFile(t, filepath.Join(top, "Dockerfile"), "FROM scratch\n")
	cmd := exec.Command(bin, "build", "--root", filepath.Join(top, "root"), top)
	cmd.Env = []string{"HOME=" + top, "PATH=" + os.Getenv("PATH"), "KILN_SYNC=wait"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	got, _ := cmd.CombinedOutput()
	want := fmt.Sprintf("rootless builds need a range in /etc/subuid and /etc/subgid for %[1]s (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %[1]s)", name)
	if !strings.Contains(string(got), want) {
		t.Errorf("output:\n%s\nwant it to say %q", got, want)
	}
}

// needRootless stops a test where a rootless build cannot run: kiln's
// tests make a throwaway user as root, need newuidmap/newgidmap (and any
// tools named), unprivileged user namespaces, and overlayfs in a user
// namespace (Linux 5.11).
func needRootless(t *testing.T, tools ...string) {
	t.Helper()
	needRoot(t)
	for _, tool := range append([]string{"newuidmap", "newgidmap"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipHostf(t, "rootless builds need %s (packages uidmap, util-linux): %v", tool, err)
		}
	}
	if v, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(v)) == "0" {
		testutil.SkipHost(t, "the kernel allows user namespaces to root only (kernel.unprivileged_userns_clone=0)")
	}
	var u unix.Utsname
	must(t, unix.Uname(&u))
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err == nil && (major < 5 || major == 5 && minor < 11) {
		testutil.SkipHostf(t, "kernel %s: overlayfs in a user namespace needs Linux 5.11", release)
	}
}

// userTree makes a directory only the test's throwaway user (uid, gid)
// works in — the test's own temp dirs are closed to others — and returns
// the function that makes its subdirectories, owned by that user.
func userTree(t *testing.T, prefix string, uid, gid int) func(name string) string {
	t.Helper()
	top, err := os.MkdirTemp("", prefix)
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(top) })
	must(t, os.Chmod(top, 0o755))
	return func(name string) string {
		p := filepath.Join(top, name)
		must(t, os.Mkdir(p, 0o755))
		must(t, os.Chown(p, uid, gid))
		return p
	}
}

// throwawayUser creates a user with no home and a subuid/subgid range no
// other user has, deleted when the test ends.
func throwawayUser(t *testing.T) (name string, uid, gid int) {
	t.Helper()
	name = fmt.Sprintf("kilnrl%d", os.Getpid())
	if out, err := exec.Command("useradd", "-M", "-s", "/bin/false", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel: %v\n%s", err, out)
		}
	})
	start := max(freeSubID(t, "/etc/subuid"), freeSubID(t, "/etc/subgid"))
	r := fmt.Sprintf("%d-%d", start, start+65535)
	if out, err := exec.Command("usermod", "--add-subuids", r, "--add-subgids", r, name).CombinedOutput(); err != nil {
		t.Fatalf("usermod: %v\n%s", err, out)
	}
	u, err := user.Lookup(name)
	must(t, err)
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return name, uid, gid
}

// freeSubID is the first ID above every range in file (and above
// 100000, where useradd starts).
func freeSubID(t *testing.T, file string) int {
	t.Helper()
	free := 100000
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return free
	}
	must(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 {
			continue
		}
		start, err1 := strconv.Atoi(parts[1])
		count, err2 := strconv.Atoi(parts[2])
		if err1 == nil && err2 == nil && start+count > free {
			free = start + count
		}
	}
	return free
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
}
