package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testutil"
)

// identityDockerfile uses the cache target /c as five different caches
// would see it in BuildKit: plain, with a uid, seeded from a stage's
// directory, and plain again.
func identityDockerfile(base string) string {
	return "FROM " + base + " AS seed\n" +
		"RUN mkdir -p /data && echo seeded > /data/s && chown -R 7:7 /data/s\n" +
		"FROM " + base + "\n" +
		"ARG N\n" +
		"RUN --mount=type=cache,target=/c echo $N > /c/plain-$N\n" +
		"RUN --mount=type=cache,target=/c,uid=1000 sh -c 'ls /c | tr \"\\n\" \" \" > /uid; stat -c %u /c >> /uid; echo $N > /c/uid-$N'\n" +
		"RUN --mount=type=cache,target=/c,from=seed,source=/data sh -c 'ls /c | tr \"\\n\" \" \" > /from; stat -c %u /c/s >> /from; echo $N > /c/from-$N'\n" +
		"RUN --mount=type=cache,target=/c sh -c 'ls /c | tr \"\\n\" \" \" > /plain'\n"
}

func readResult(t *testing.T, rootfs, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rootfs, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestCacheMountIdentity: mounts of one target that differ in uid or
// from= are different caches; from= seeds a new cache from the stage's
// source path (owners kept); the ids stay the same through a cache
// exported with mounts=true and imported on another root.
func TestCacheMountIdentity(t *testing.T) {
	needRoot(t)
	_, _, base := cacheRegistry(t)
	ctxDir := registryContext(t, identityDockerfile(base))
	root := t.TempDir()
	cacheDir := filepath.Join(t.TempDir(), "cache")
	build := func(root, n string, extra ...string) string {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		args := append([]string{"build", "--root", root, "--progress=plain", "--build-arg", "N=" + n, "-o", "type=local,dest=" + rootfs}, extra...)
		out, code := kiln(t, append(args, ctxDir)...)
		if code != 0 {
			t.Fatalf("kiln build exited %d:\n%s", code, out)
		}
		return rootfs
	}
	r := build(root, "1")
	for _, c := range []struct{ file, want string }{
		{"uid", "1000"},      // a new cache: empty, owned by the uid
		{"from", "s 7"},      // seeded from /data, owner kept
		{"plain", "plain-1"}, // the plain cache, untouched by the others
	} {
		if got := readResult(t, r, c.file); got != c.want {
			t.Errorf("first build: /%s = %q, want %q", c.file, got, c.want)
		}
	}
	r = build(root, "2", "--cache-to", "type=local,dest="+cacheDir+",mounts=true")
	for _, c := range []struct{ file, want string }{
		{"uid", "uid-1 1000"},
		{"from", "from-1 s 7"},
		{"plain", "plain-1 plain-2"},
	} {
		if got := readResult(t, r, c.file); got != c.want {
			t.Errorf("second build: /%s = %q, want %q", c.file, got, c.want)
		}
	}
	// Another root, from the exported cache: each mount finds its own.
	r = build(t.TempDir(), "3", "--cache-from", "type=local,src="+cacheDir)
	for _, c := range []struct{ file, want string }{
		{"uid", "uid-1 uid-2 1000"},
		{"from", "from-1 from-2 s 7"},
		{"plain", "plain-1 plain-2 plain-3"},
	} {
		if got := readResult(t, r, c.file); got != c.want {
			t.Errorf("from the exported cache: /%s = %q, want %q", c.file, got, c.want)
		}
	}
}

// TestCacheMountFromContained: a from= source that is a symlink to a host
// directory is resolved inside the stage, like a COPY --from source: the
// cache never shows the host's files, and writes to it stay in the store.
func TestCacheMountFromContained(t *testing.T) {
	needRoot(t)
	_, _, base := cacheRegistry(t)
	c := testutil.NewCanary(t)
	canary, err := os.ReadFile(c.File())
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := registryContext(t, "FROM "+base+" AS seed\n"+
		"RUN mkdir -p /in && ln -s "+c.Dir+" /abs && ln -s "+c.Rel()+" /in/rel\n"+
		"FROM "+base+"\n"+
		"RUN --mount=type=cache,target=/c,from=seed,source=/abs sh -c 'cat /c/file > /abs.txt 2>&1; echo x > /c/file; true'\n"+
		"RUN --mount=type=cache,target=/c,from=seed,source=/in/rel sh -c 'cat /c/file > /rel.txt 2>&1; echo x > /c/file; true'\n")
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	out, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest="+rootfs, ctxDir)
	c.Check(t)
	if code != 0 {
		if !strings.Contains(out, "not found") {
			t.Fatalf("exit %d, want success or a source not found:\n%s", code, out)
		}
		return
	}
	for _, f := range []string{"abs.txt", "rel.txt"} {
		if got := readResult(t, rootfs, f); strings.Contains(got, strings.TrimSpace(string(canary))) {
			t.Errorf("/%s shows the host canary: %q", f, got)
		}
	}
}
