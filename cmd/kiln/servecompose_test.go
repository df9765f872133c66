package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// composeProject is a docker-compose project of two services built from
// different contexts and Dockerfiles, one with a build argument, the
// other with a target, and a third whose build fails, in a file of its
// own so that the good project builds alone.
var composeProject = map[string]string{
	"docker-compose.yml": `version: "3.8"
services:
  web:
    build:
      context: ./web
      args:
        GREETING: hello-compose
    image: compose/web:1
  worker:
    build:
      context: ./worker
      dockerfile: build/worker.Dockerfile
      target: final
    image: compose/worker:1
`,
	"web/Dockerfile": `FROM test/busybox:1
ARG GREETING=unset
RUN echo "$GREETING" > /greeting
COPY index.html /srv/index.html
`,
	"web/index.html": "<p>hello</p>\n",
	"worker/build/worker.Dockerfile": `FROM test/busybox:1 AS base
COPY job.sh /job.sh
FROM base AS final
RUN sh /job.sh > /done
FROM base AS broken
RUN echo about to fail
RUN exit 3
`,
	"worker/job.sh": "echo job done\n",
	"docker-compose.broken.yml": `version: "3.8"
services:
  broken:
    build:
      context: ./worker
      dockerfile: build/worker.Dockerfile
      target: broken
    image: compose/broken:1
`,
}

// TestServeCompose runs `docker-compose build` (1.29, Debian's, with the
// classic build API) against kiln serve: both services' images land in
// kiln's store with the IDs kiln build gives the same inputs, and a
// failing service build makes compose exit non-zero naming the
// Dockerfile line.
func TestServeCompose(t *testing.T) {
	needRoot(t)
	needTool(t, "docker-compose", "docker-compose")
	dir := t.TempDir()
	s, root, sock := serveBusybox(t, dir)
	proj := filepath.Join(dir, "proj")
	writeFiles(t, proj, composeProject)

	compose := func(t *testing.T, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("docker-compose", args...)
		cmd.Dir = proj
		cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+sock, "COMPOSE_DOCKER_CLI_BUILD=0", "DOCKER_BUILDKIT=0",
			"DOCKER_CONFIG="+t.TempDir(), "COMPOSE_PROJECT_NAME=kilntest")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("running docker-compose: %v", err)
		}
		// An endpoint compose needs that kiln serve lacks answers 501
		// with this message: name it.
		if m := notImplemented.FindString(string(out)); m != "" {
			t.Fatalf("docker-compose needs an endpoint kiln serve does not implement: %s", m)
		}
		return string(out), code
	}

	out, code := compose(t, "build")
	if code != 0 {
		t.Fatalf("docker-compose build: exit %d:\n%s\nserver:\n%s", code, out, s.log)
	}
	images, _ := kiln(t, "--root", root, "images")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"compose/web   1", []string{"--build-arg", "GREETING=hello-compose", filepath.Join(proj, "web")}},
		{"compose/worker   1", []string{"-f", filepath.Join(proj, "worker/build/worker.Dockerfile"), "--target", "final", filepath.Join(proj, "worker")}},
	} {
		iid := filepath.Join(t.TempDir(), "iid")
		if o, code := kiln(t, append([]string{"--root", root, "build", "--iidfile", iid}, tc.args...)...); code != 0 {
			t.Fatalf("kiln build %s: %s", tc.args, o)
		}
		id, err := os.ReadFile(iid)
		if err != nil {
			t.Fatal(err)
		}
		short := strings.TrimPrefix(string(id), "sha256:")[:12]
		if !strings.Contains(out, "Successfully built "+short+"\n") {
			t.Errorf("docker-compose built another image than kiln build's %s for %s:\n%s", id, tc.name, out)
		}
		// kiln images pads its columns: match the row by its fields.
		fields := strings.Fields(tc.name)
		row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(fields[0]) + `\s+` + fields[1] + `\s+` + short + `\s`)
		if !row.MatchString(images) {
			t.Errorf("kiln images does not list %s as %s:\n%s", tc.name, short, images)
		}
	}

	out, code = compose(t, "-f", "docker-compose.broken.yml", "build")
	if code == 0 || !strings.Contains(out, "worker.Dockerfile:7") || !strings.Contains(out, "Service 'broken' failed to build") {
		t.Errorf("docker-compose build of a failing RUN: exit %d, want non-zero naming worker.Dockerfile:7:\n%s", code, out)
	}
}

// notImplemented is kiln serve's 501 message as a client prints it.
var notImplemented = regexp.MustCompile(`kiln serves builds and images only: [A-Z]+ \S+ is not implemented`)
