package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// reproEpoch is the SOURCE_DATE_EPOCH of these tests: in the past, so that
// every file a build writes is later and gets clamped.
const reproEpoch = 1700000000

var reproCases = []struct {
	name, dockerfile string
}{
	{"copy", `FROM {{BASE}}
COPY src/ /src/
COPY old.txt /old.txt
COPY --chmod=755 a.txt /bin/a
`},
	{"run", `FROM {{BASE}}
RUN mkdir -p /out/d && echo one > /out/d/one && sleep 1 && echo two > /out/two && ln /out/two /out/two-link && ln -s two /out/sym && mkfifo /out/fifo && rm /bin/vi
`},
	{"add-archive", `FROM {{BASE}}
ADD files.tar.gz /x/
ADD files.tar.gz /y
`},
	{"heredoc", `FROM {{BASE}}
COPY <<EOF /etc/motd
hello
EOF
RUN <<EOF
mkdir -p /srv
echo built > /srv/x
EOF
COPY --chmod=755 <<-"EOF" /usr/local/bin/hi
	#!/bin/sh
	echo hi
EOF
`},
	{"multi-stage", `FROM {{BASE}} AS build
WORKDIR /src/sub
COPY a.txt .
RUN cat a.txt a.txt > b.txt && sleep 1 && touch c.txt
FROM {{BASE}}
ENV X=1
WORKDIR /app
COPY --from=build /src /app
RUN cp /app/sub/b.txt /b.txt
`},
}

// writeReproContext writes a fresh copy of a case's context, as another
// checkout on another machine would: same contents, new mtimes (but for
// old.txt, older than the epoch, whose mtime the image keeps).
func writeReproContext(t *testing.T, dockerfile, base string) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Dockerfile"), strings.ReplaceAll(dockerfile, "{{BASE}}", base))
	writeFile(t, filepath.Join(dir, "src/one.txt"), "one\n")
	writeFile(t, filepath.Join(dir, "src/deep/two.txt"), "two\n")
	writeFile(t, filepath.Join(dir, "a.txt"), "a\n")
	writeFile(t, filepath.Join(dir, "old.txt"), "old\n")
	old := time.Unix(reproEpoch-86400, 0)
	must(t, os.Chtimes(filepath.Join(dir, "old.txt"), old, old))

	// an archive whose entries are newer and older than the epoch, and
	// whose implicit parent directory is not in it
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i, e := range []struct {
		name  string
		mtime int64
	}{{"new/file", reproEpoch + 5000}, {"old/file", reproEpoch - 5000}, {"implicit/parent/file", reproEpoch + 1}} {
		data := fmt.Sprintf("entry %d\n", i)
		must(t, tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(e.mtime, 0), Typeflag: tar.TypeReg}))
		_, err := io.WriteString(tw, data)
		must(t, err)
	}
	must(t, tw.Close())
	must(t, zw.Close())
	writeFile(t, filepath.Join(dir, "files.tar.gz"), buf.String())
	return dir
}

var manifestLine = regexp.MustCompile(`(?m)^manifest (sha256:[0-9a-f]{64})$`)

// reproBuild builds ctxDir on root into an OCI layout and returns the
// manifest digest the build printed (checked against the layout's), the
// image, and the build's output.
func reproBuild(t *testing.T, root, ctxDir string, env []string, extra ...string) (string, v1.Image, string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "oci")
	args := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=oci,tar=false,dest=" + dest}, extra...)
	args = append(args, ctxDir)
	log, code := kilnEnv(t, env, args...)
	if code != 0 {
		t.Fatalf("kiln %s: exit %d\n%s", strings.Join(args, " "), code, log)
	}
	m := manifestLine.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no manifest digest in the output:\n%s", log)
	}
	idx, err := layout.ImageIndexFromPath(dest)
	must(t, err)
	im, err := idx.IndexManifest()
	must(t, err)
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != m[1] {
		t.Fatalf("layout holds %+v, the build printed %s", im.Manifests, m[1])
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	must(t, err)
	return m[1], img, log
}

// kilnEnv is kiln with extra environment variables (and no inherited
// SOURCE_DATE_EPOCH).
func kilnEnv(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Unsetenv("SOURCE_DATE_EPOCH")
	defer func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		}
	}()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return kiln(t, args...)
}

func epochArg(sec int64) []string {
	return []string{"--build-arg", "SOURCE_DATE_EPOCH=" + strconv.FormatInt(sec, 10)}
}

// describe lists an image's config times and its layers' entries, for a
// failure message that shows where two images differ.
func describe(t *testing.T, img v1.Image) string {
	t.Helper()
	var b strings.Builder
	cfg, err := img.ConfigFile()
	must(t, err)
	fmt.Fprintf(&b, "created %v\n", cfg.Created.Time.Unix())
	for _, h := range cfg.History {
		fmt.Fprintf(&b, "history %v %s\n", h.Created.Time.Unix(), h.CreatedBy)
	}
	ls, err := img.Layers()
	must(t, err)
	for i, l := range ls {
		d, _ := l.Digest()
		fmt.Fprintf(&b, "layer %d %s\n", i, d)
		for _, e := range layerEntries(t, l) {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	return b.String()
}

// layerEntries lists a layer's entries as "name mtime".
func layerEntries(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	must(t, err)
	defer rc.Close()
	var out []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		out = append(out, fmt.Sprintf("%s %d", hdr.Name, hdr.ModTime.Unix()))
	}
}

// checkEpochImage checks what SOURCE_DATE_EPOCH does to an image: created
// and the history the build added are the epoch, the base layer is the
// base's, and (unless keepTimes) no entry of a new layer is later than it.
func checkEpochImage(t *testing.T, img, base v1.Image, epoch int64, keepTimes bool) {
	t.Helper()
	cfg, err := img.ConfigFile()
	must(t, err)
	baseCfg, err := base.ConfigFile()
	must(t, err)
	if got := cfg.Created.Time.Unix(); got != epoch {
		t.Errorf("created = %d, want the epoch %d", got, epoch)
	}
	for i, h := range cfg.History {
		if i < len(baseCfg.History) {
			if !h.Created.Time.Equal(baseCfg.History[i].Created.Time) {
				t.Errorf("base history %d: created %v, want the base's %v", i, h.Created.Time, baseCfg.History[i].Created.Time)
			}
			continue
		}
		if got := h.Created.Time.Unix(); got != epoch {
			t.Errorf("history %d (%s): created %d, want the epoch %d", i, h.CreatedBy, got, epoch)
		}
	}
	ls, err := img.Layers()
	must(t, err)
	baseLs, err := base.Layers()
	must(t, err)
	later := 0
	for i, l := range ls {
		if i < len(baseLs) {
			got, _ := l.Digest()
			want, _ := baseLs[i].Digest()
			if got != want {
				t.Errorf("base layer %d rewritten: %s, want %s", i, got, want)
			}
			continue
		}
		for _, e := range layerEntries(t, l) {
			name, mt, _ := strings.Cut(e, " ")
			sec, _ := strconv.ParseInt(mt, 10, 64)
			if sec > epoch {
				later++
				if !keepTimes {
					t.Errorf("layer %d: %s has mtime %d, after the epoch %d", i, name, sec, epoch)
				}
			}
		}
	}
	if keepTimes && later == 0 {
		t.Errorf("rewrite-timestamp=false: no mtime after the epoch in the new layers")
	}
}

// TestReproducible builds each case three times — on two empty roots from
// two fresh copies of the context, and again with --no-cache — under the
// same SOURCE_DATE_EPOCH: the image digest must be the same every time.
func TestReproducible(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base := reg + "/library/busybox:latest"
	baseImg := baseImage(t, base)
	for _, tc := range reproCases {
		t.Run(tc.name, func(t *testing.T) {
			rootA, rootB := t.TempDir(), t.TempDir()
			first, img, _ := reproBuild(t, rootA, writeReproContext(t, tc.dockerfile, base), nil, epochArg(reproEpoch)...)
			checkEpochImage(t, img, baseImg, reproEpoch, false)
			for _, run := range []struct {
				name  string
				root  string
				extra []string
			}{
				{"another empty root", rootB, nil},
				{"--no-cache", rootA, []string{"--no-cache"}},
			} {
				got, again, _ := reproBuild(t, run.root, writeReproContext(t, tc.dockerfile, base), nil, append(epochArg(reproEpoch), run.extra...)...)
				if got != first {
					t.Fatalf("%s: digest %s, first build %s\n--- first\n%s--- %s\n%s", run.name, got, first, describe(t, img), run.name, describe(t, again))
				}
			}
		})
	}
}

// TestReproducibleSettings covers where the epoch comes from, what it is
// part of, and how rewrite-timestamp=false and its absence behave.
func TestReproducibleSettings(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	base := reg + "/library/busybox:latest"
	baseImg := baseImage(t, base)
	df := reproCases[1].dockerfile // run: files made at build time
	ctx := func() string { return writeReproContext(t, df, base) }

	root := t.TempDir()
	want, _, _ := reproBuild(t, root, ctx(), nil, epochArg(reproEpoch)...)

	t.Run("environment", func(t *testing.T) {
		got, _, _ := reproBuild(t, t.TempDir(), ctx(), []string{"SOURCE_DATE_EPOCH=" + strconv.Itoa(reproEpoch)})
		if got != want {
			t.Errorf("SOURCE_DATE_EPOCH in the environment: %s, as a build arg: %s", got, want)
		}
	})
	t.Run("build arg beats environment", func(t *testing.T) {
		got, _, _ := reproBuild(t, t.TempDir(), ctx(), []string{"SOURCE_DATE_EPOCH=1"}, epochArg(reproEpoch)...)
		if got != want {
			t.Errorf("got %s, want the build arg's %s", got, want)
		}
	})
	t.Run("global ARG default", func(t *testing.T) {
		dir := writeReproContext(t, "ARG SOURCE_DATE_EPOCH="+strconv.Itoa(reproEpoch)+"\n"+df, base)
		_, img, _ := reproBuild(t, t.TempDir(), dir, nil)
		checkEpochImage(t, img, baseImg, reproEpoch, false)
	})
	t.Run("another epoch", func(t *testing.T) {
		got, img, _ := reproBuild(t, root, ctx(), nil, epochArg(reproEpoch+3600)...)
		if got == want {
			t.Errorf("epoch %d gives the digest of epoch %d", reproEpoch+3600, reproEpoch)
		}
		checkEpochImage(t, img, baseImg, reproEpoch+3600, false)
	})
	t.Run("the cache tells epochs apart", func(t *testing.T) {
		// a layer cached without the epoch must not serve a build with it,
		// nor the other way round
		r := t.TempDir()
		plain, _, log := reproBuild(t, r, ctx(), nil)
		if plain == want {
			t.Fatal("without the epoch, the digest of the build with it")
		}
		_, _, log = reproBuild(t, r, ctx(), nil, epochArg(reproEpoch)...)
		if firstRerun(log) == "" {
			t.Errorf("the build with the epoch reused the layers made without:\n%s", log)
		}
		got, _, log := reproBuild(t, r, ctx(), nil, epochArg(reproEpoch)...)
		if firstRerun(log) != "" || got != want {
			t.Errorf("rebuild with the epoch: first rerun %q, digest %s (want none, %s)", firstRerun(log), got, want)
		}
		again, _, log := reproBuild(t, r, ctx(), nil)
		if firstRerun(log) != "" || again != plain {
			t.Errorf("rebuild without the epoch: first rerun %q, digest %s (want none, %s)", firstRerun(log), again, plain)
		}
	})
	t.Run("rewrite-timestamp=false", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "oci")
		args := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=oci,tar=false,rewrite-timestamp=false,dest=" + dest}, epochArg(reproEpoch)...)
		log, code := kilnEnv(t, nil, append(args, ctx())...)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, log)
		}
		idx, err := layout.ImageIndexFromPath(dest)
		must(t, err)
		im, err := idx.IndexManifest()
		must(t, err)
		if im.Manifests[0].Digest.String() == want {
			t.Error("rewrite-timestamp=false gives the clamped image")
		}
		img, err := idx.Image(im.Manifests[0].Digest)
		must(t, err)
		checkEpochImage(t, img, baseImg, reproEpoch, true)
	})
	t.Run("rewrite-timestamp=true", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "oci")
		args := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=oci,tar=false,rewrite-timestamp=true,dest=" + dest}, epochArg(reproEpoch)...)
		log, code := kilnEnv(t, nil, append(args, ctx())...)
		if code != 0 || !strings.Contains(log, "manifest "+want) {
			t.Errorf("exit %d, want the digest %s:\n%s", code, want, log)
		}
	})
	t.Run("rewrite-timestamp=true without an epoch", func(t *testing.T) {
		d := t.TempDir()
		log, code := kilnEnv(t, nil, "build", "--root", root, "--progress=plain", "-o", "type=oci,dest="+d+"/a.tar,rewrite-timestamp=true", ctx())
		if code != 0 || !strings.Contains(log, "WARNING: rewrite-timestamp=true does nothing without SOURCE_DATE_EPOCH") {
			t.Errorf("exit %d, want success with a warning:\n%s", code, log)
		}
	})
	t.Run("outputs disagree", func(t *testing.T) {
		d := t.TempDir()
		args := append([]string{"build", "--root", root, "-o", "type=oci,dest=" + d + "/a.tar,rewrite-timestamp=false", "-o", "type=oci,dest=" + d + "/b.tar,rewrite-timestamp=true"}, epochArg(reproEpoch)...)
		log, code := kilnEnv(t, nil, append(args, ctx())...)
		if code == 0 || !strings.Contains(log, "disagree on rewrite-timestamp") {
			t.Errorf("exit %d, want a usage error naming rewrite-timestamp:\n%s", code, log)
		}
	})
	t.Run("bad epoch", func(t *testing.T) {
		log, code := kilnEnv(t, nil, "build", "--root", root, "--build-arg", "SOURCE_DATE_EPOCH=yesterday", ctx())
		if code == 0 || !strings.Contains(log, "SOURCE_DATE_EPOCH") {
			t.Errorf("exit %d, want an error naming SOURCE_DATE_EPOCH:\n%s", code, log)
		}
	})
}
