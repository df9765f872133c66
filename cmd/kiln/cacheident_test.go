package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
