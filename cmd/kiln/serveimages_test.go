package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testutil"
)

// TestServeImages drives the image endpoints of kiln serve with the
// docker CLI and docker-py on an image built through the server: images,
// inspect (the ID is kiln build's), tag, history, save and load (a round
// trip keeps the ID, and kiln load reads the archive too), rmi, system df
// and builder prune; and the failure paths answer 4xx JSON, a load of a
// hostile archive writing nothing outside the store's scratch.
func TestServeImages(t *testing.T) {
	needRoot(t)
	needTool(t, "docker", "docker.io")
	dir := t.TempDir()
	s, root, sock := serveBusybox(t, dir)
	host := "unix://" + sock
	c := unixClient(sock)
	dk := func(t *testing.T, args ...string) (string, int) {
		t.Helper()
		return docker(t, append([]string{"-H", host}, args...)...)
	}
	mustDocker := func(t *testing.T, args ...string) string {
		t.Helper()
		out, code := dk(t, args...)
		if code != 0 {
			t.Fatalf("docker %s: exit %d:\n%s\nserver:\n%s", strings.Join(args, " "), code, out, s.log)
		}
		return out
	}

	ctxDir := filepath.Join(dir, "ctx")
	writeFiles(t, ctxDir, map[string]string{
		"Dockerfile": "FROM test/busybox:1\nENV A=b\nLABEL l=v\nRUN echo hi > /x\nCMD [\"sh\"]\n",
	})
	cmd := exec.Command("docker", "-H", host, "build", "--network", "none", "-t", "app:1", ".")
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v:\n%s\nserver:\n%s", err, out, s.log)
	}
	iidFile := filepath.Join(dir, "iid")
	if out, code := kiln(t, "--root", root, "build", "--network", "none", "--iidfile", iidFile, ctxDir); code != 0 {
		t.Fatalf("kiln build: %s", out)
	}
	b, err := os.ReadFile(iidFile)
	if err != nil {
		t.Fatal(err)
	}
	iid := strings.TrimSpace(string(b))
	short := strings.TrimPrefix(iid, "sha256:")[:12]

	t.Run("images", func(t *testing.T) {
		out := mustDocker(t, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
		if !strings.Contains(out, "app:1 "+short+"\n") || !strings.Contains(out, "test/busybox:1 ") {
			t.Errorf("docker images does not list app:1 as %s and test/busybox:1:\n%s", short, out)
		}
		out = mustDocker(t, "images", "--format", "{{.Repository}}", "app")
		if strings.TrimSpace(out) != "app" {
			t.Errorf("docker images app (a reference filter) lists:\n%s", out)
		}
		out = mustDocker(t, "images", "--format", "{{.Repository}}", "--filter", "label=l=v")
		if strings.TrimSpace(out) != "app" {
			t.Errorf("docker images --filter label=l=v lists:\n%s", out)
		}
		out = mustDocker(t, "images", "-q", "--filter", "dangling=true")
		if strings.TrimSpace(out) != "" {
			t.Errorf("docker images --filter dangling=true lists:\n%s", out)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		format := "{{.Id}}|{{json .Config.Env}}|{{.Config.Labels.l}}|{{json .Config.Cmd}}|{{.Os}}|{{len .RootFS.Layers}}|{{.RootFS.Type}}|{{.GraphDriver.Name}}|{{json .RepoTags}}"
		out := mustDocker(t, "image", "inspect", "--format", format, "app:1")
		parts := strings.Split(strings.TrimSpace(out), "|")
		if len(parts) != 9 || parts[0] != iid || !strings.Contains(parts[1], `"A=b"`) || parts[2] != "v" || parts[3] != `["sh"]` ||
			parts[4] != "linux" || parts[5] != "2" || parts[6] != "layers" || parts[7] != "overlayfs" || parts[8] != `["app:1"]` {
			t.Errorf("docker image inspect app:1: %s; want Id %s, Env A=b, label l=v, Cmd [sh], 2 layers", out, iid)
		}
		for _, ref := range []string{short, iid, strings.TrimPrefix(iid, "sha256:")} {
			if out := mustDocker(t, "image", "inspect", "--format", "{{.Id}}", ref); strings.TrimSpace(out) != iid {
				t.Errorf("docker image inspect %s: %s, want %s", ref, out, iid)
			}
		}
		out, code := dk(t, "image", "inspect", "nope:1")
		if code == 0 || !strings.Contains(out, "No such image: nope:1") {
			t.Errorf("docker image inspect nope:1: exit %d:\n%s", code, out)
		}
	})

	t.Run("tag and history", func(t *testing.T) {
		mustDocker(t, "tag", "app:1", "other/app:2")
		if out := mustDocker(t, "image", "inspect", "--format", "{{.Id}}", "other/app:2"); strings.TrimSpace(out) != iid {
			t.Errorf("other/app:2 after docker tag: %s, want %s", out, iid)
		}
		out := mustDocker(t, "history", "--format", "{{.ID}}|{{.CreatedBy}}", "app:1")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 4 || lines[0] != short+`|CMD ["sh"]` || !strings.Contains(out, "<missing>|RUN /bin/sh -c echo hi > /x") {
			t.Errorf("docker history app:1:\n%s", out)
		}
	})

	t.Run("save and load", func(t *testing.T) {
		tarFile := filepath.Join(t.TempDir(), "app.tar")
		mustDocker(t, "save", "-o", tarFile, "app:1")
		// the archive kiln save writes, byte for byte
		kilnTar := filepath.Join(t.TempDir(), "kiln.tar")
		if out, code := kiln(t, "--root", root, "save", "app:1", "-o", kilnTar); code != 0 {
			t.Fatalf("kiln save: %s", out)
		}
		if a, b := readFile(t, tarFile), readFile(t, kilnTar); a != b {
			t.Errorf("docker save through kiln serve wrote %d bytes, kiln save %d other ones", len(a), len(b))
		}
		out := mustDocker(t, "rmi", "app:1")
		if strings.Contains(out, "Deleted") || !strings.Contains(out, "Untagged: app:1") {
			t.Errorf("docker rmi app:1 while other/app:2 names it too:\n%s", out)
		}
		out = mustDocker(t, "load", "-i", tarFile)
		if !strings.Contains(out, "Loaded image: app:1") {
			t.Errorf("docker load:\n%s", out)
		}
		if out := mustDocker(t, "image", "inspect", "--format", "{{.Id}}", "app:1"); strings.TrimSpace(out) != iid {
			t.Errorf("app:1 after the save/load round trip: %s, want %s", out, iid)
		}
		// kiln load reads what the server saved
		other := filepath.Join(t.TempDir(), "root")
		if out, code := kiln(t, "--root", other, "load", "-i", tarFile); code != 0 || !strings.Contains(out, "Loaded image: app:1") {
			t.Fatalf("kiln load of docker save's archive: exit %d:\n%s", code, out)
		}
		if out, _ := kiln(t, "--root", other, "images", "-q"); strings.TrimSpace(out) != short {
			t.Errorf("kiln images -q after kiln load: %q, want %s", out, short)
		}
		// several images in one archive, through GET /images/get
		mustDocker(t, "save", "-o", tarFile, "app:1", "test/busybox:1")
		other = filepath.Join(t.TempDir(), "root")
		if out, code := kiln(t, "--root", other, "load", "-i", tarFile); code != 0 || !strings.Contains(out, "app:1") || !strings.Contains(out, "test/busybox:1") {
			t.Errorf("kiln load of a two-image docker save: exit %d:\n%s", code, out)
		}
		if out := mustDocker(t, "load", "-i", tarFile); !strings.Contains(out, "Loaded image: app:1") || !strings.Contains(out, "Loaded image: test/busybox:1") {
			t.Errorf("docker load of a two-image archive:\n%s", out)
		}
		// an OCI archive, gzip-compressed
		ociFile := filepath.Join(t.TempDir(), "oci.tar")
		if out, code := kiln(t, "--root", root, "save", "app:1", "--format", "oci", "-o", ociFile); code != 0 {
			t.Fatalf("kiln save --format oci: %s", out)
		}
		if err := exec.Command("gzip", ociFile).Run(); err != nil {
			t.Fatal(err)
		}
		mustDocker(t, "rmi", "app:1")
		if out := mustDocker(t, "load", "-i", ociFile+".gz"); !strings.Contains(out, "Loaded image: app:1") {
			t.Errorf("docker load of a gzipped OCI archive:\n%s", out)
		}
		if out := mustDocker(t, "image", "inspect", "--format", "{{.Id}}", "app:1"); strings.TrimSpace(out) != iid {
			t.Errorf("app:1 after loading the OCI archive: %s, want %s", out, iid)
		}
	})

	t.Run("docker-py", func(t *testing.T) {
		needTool(t, "python3", "python3")
		if exec.Command("python3", "-c", "import docker").Run() != nil {
			testutil.SkipHost(t, "needs docker-py (Debian package python3-docker)")
		}
		out, err := exec.Command("python3", "-c", `
import docker, json, sys
c = docker.DockerClient(base_url=sys.argv[1])
tags = sorted(t for i in c.images.list() for t in i.tags)
print(json.dumps([c.images.get("app:1").id, tags]))
`, host).CombinedOutput()
		var got struct {
			ID   string
			Tags []string
		}
		var raw []json.RawMessage
		if err == nil && json.Unmarshal(out, &raw) == nil && len(raw) == 2 {
			json.Unmarshal(raw[0], &got.ID)
			json.Unmarshal(raw[1], &got.Tags)
		}
		if err != nil || got.ID != iid || strings.Join(got.Tags, " ") != "app:1 other/app:2 test/busybox:1" {
			t.Errorf("docker-py: %v:\n%s", err, out)
		}
	})

	t.Run("df, rmi and prune", func(t *testing.T) {
		out := mustDocker(t, "system", "df")
		if !strings.Contains(out, "Images") || !strings.Contains(out, "Build Cache") {
			t.Errorf("docker system df:\n%s", out)
		}
		mustDocker(t, "tag", "app:1", "third/app:3")
		// a digest reference removes the names of its repository only
		digest := strings.TrimSpace(mustDocker(t, "image", "inspect", "--format", `{{range .RepoDigests}}{{println .}}{{end}}`, "third/app:3"))
		var ref string
		for _, d := range strings.Fields(digest) {
			if strings.HasPrefix(d, "third/app@sha256:") {
				ref = d
			}
		}
		if out := mustDocker(t, "rmi", ref); strings.TrimSpace(out) != "Untagged: third/app:3" {
			t.Errorf("docker rmi %s (RepoDigests %q):\n%s", ref, digest, out)
		}
		mustDocker(t, "tag", "app:1", "third/app:3")
		out, code := dk(t, "rmi", short)
		if code == 0 || !strings.Contains(out, "must be forced") {
			t.Errorf("docker rmi of an ID with names in several repositories: exit %d, want the conflict:\n%s", code, out)
		}
		out = mustDocker(t, "rmi", "-f", short)
		for _, want := range []string{"Untagged: app:1", "Untagged: other/app:2", "Untagged: third/app:3", "Deleted: " + iid} {
			if !strings.Contains(out, want) {
				t.Errorf("docker rmi -f %s: no %q in:\n%s", short, want, out)
			}
		}
		out = mustDocker(t, "builder", "prune", "-af")
		if !strings.Contains(out, "Total reclaimed space:") || strings.Contains(out, "Total reclaimed space: 0B") {
			t.Errorf("docker builder prune -af after the image's removal reclaimed nothing:\n%s", out)
		}
		if out, _ := kiln(t, "--root", root, "images", "-q"); strings.TrimSpace(out) == "" {
			t.Errorf("prune removed test/busybox:1, a named image")
		}
	})

	// docker tag $(docker build -q .) NAME: a build without -t is found
	// by its ID, listed untagged (dangling), and goes with its last name.
	t.Run("untagged build", func(t *testing.T) {
		udir := filepath.Join(dir, "untagged")
		writeFiles(t, udir, map[string]string{"Dockerfile": "FROM test/busybox:1\nLABEL only=here\n"})
		cmd := exec.Command("docker", "-H", host, "build", "-q", "--network", "none", ".")
		cmd.Dir = udir
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("docker build -q without -t: %v:\n%s\nserver:\n%s", err, out, s.log)
		}
		id := strings.TrimSpace(string(out))
		if !strings.HasPrefix(id, "sha256:") {
			t.Fatalf("docker build -q printed %q, want the image ID", id)
		}
		if got := mustDocker(t, "image", "inspect", "--format", "{{.Id}} {{len .RepoTags}} {{.Config.Labels.only}}", id); strings.TrimSpace(got) != id+" 0 here" {
			t.Errorf("docker image inspect of the untagged build: %q", got)
		}
		if got := mustDocker(t, "images", "-q", "--no-trunc", "--filter", "dangling=true"); !strings.Contains(got, id) {
			t.Errorf("docker images --filter dangling=true does not list the untagged build %s:\n%s", id, got)
		}
		if strings.Contains(mustDocker(t, "images"), "untagged.kiln") {
			t.Errorf("docker images shows the hidden name of an untagged build")
		}
		mustDocker(t, "tag", id, "named/late:1")
		got := mustDocker(t, "rmi", "named/late:1")
		if !strings.Contains(got, "Untagged: named/late:1") || !strings.Contains(got, "Deleted: "+id) {
			t.Errorf("docker rmi of the untagged build's only name: want it untagged and deleted:\n%s", got)
		}
		if _, code := dk(t, "image", "inspect", id); code == 0 {
			t.Errorf("the untagged build %s is still there after its last name went", id)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		canary := testutil.NewCanary(t)
		var traversing bytes.Buffer
		tw := tar.NewWriter(&traversing)
		if err := testutil.WriteEntries(tw, []testutil.TarEntry{
			testutil.File(canary.Rel()+"/file", 0o644, "pwned"),
			testutil.File("manifest.json", 0o644, `[{"Config":"`+canary.Rel()+`/file","RepoTags":["evil:1"],"Layers":["`+canary.Rel()+`/file"]}]`),
		}); err != nil {
			t.Fatal(err)
		}
		tw.Close()
		oci := tarOf(t, testutil.File("oci-layout", 0o644, `{"imageLayoutVersion":"1.0.0"}`), testutil.File("index.json", 0o644, "{"),
			testutil.File("blobs/sha256/../../"+canary.Rel()+"/file", 0o644, "pwned"))
		for _, tc := range []struct {
			name, method, path string
			body               []byte
			code               int
			want               string
		}{
			{"unknown image", "GET", "/images/nope/json", nil, 404, "No such image: nope"},
			{"unknown history", "GET", "/images/nope:2/history", nil, 404, "No such image: nope:2"},
			{"bad tag", "POST", "/images/test/busybox:1/tag?repo=" + url.QueryEscape("Bad Name"), nil, 400, "tagging test/busybox:1"},
			{"tag of an unknown image", "POST", "/images/nope/tag?repo=x", nil, 404, "No such image: nope"},
			{"rmi of an unknown image", "DELETE", "/images/nope", nil, 404, "No such image: nope"},
			{"bad filters", "GET", "/images/json?filters=" + url.QueryEscape("{nope"), nil, 400, "filters"},
			{"unknown filter", "GET", "/images/json?filters=" + url.QueryEscape(`{"colour":{"red":true}}`), nil, 400, "colour"},
			{"bad prune filter", "POST", "/build/prune?filters=" + url.QueryEscape(`{"until":{"soon":true}}`), nil, 400, "until"},
			{"bad keep-storage", "POST", "/build/prune?keep-storage=lots", nil, 400, "keep-storage"},
			{"save of an unknown image", "GET", "/images/get?names=nope", nil, 404, "No such image: nope"},
			{"load of a non-archive", "POST", "/images/load", []byte("not a tar" + strings.Repeat("\n", 1024)), 400, "docker save or OCI archive"},
			{"load of a traversing docker archive", "POST", "/images/load", traversing.Bytes(), 400, "docker save or OCI archive"},
			{"load of a traversing OCI archive", "POST", "/images/load", oci, 400, "docker save or OCI archive"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, "http://kiln/v1.41"+tc.path, bytes.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				var msg struct{ Message string }
				if resp.StatusCode != tc.code || json.Unmarshal(body, &msg) != nil || !strings.Contains(msg.Message, tc.want) {
					t.Errorf("%s %s: %d %s; want %d with a JSON message naming %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.want)
				}
			})
		}
		canary.Check(t)
		if ents, err := scratchGone(filepath.Join(root, "tmp")); err != nil || len(ents) != 0 {
			t.Errorf("the store's tmp after the refused loads: %v, %v; want it empty", ents, err)
		}
		if out, _ := kiln(t, "--root", root, "images"); strings.Contains(out, "evil") {
			t.Errorf("a refused load left a name:\n%s", out)
		}
	})
}

// TestServePruneWaitsForBuilds: POST /build/prune waits for a build that
// uses the store (here one of the server's own) and prunes once it is
// over, as kiln prune does; the server answers other requests meanwhile.
func TestServePruneWaitsForBuilds(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	s, root, sock := serveBusybox(t, dir)
	c := unixClient(sock)

	// A unique argument finds the RUN's process.
	marker := fmt.Sprintf("%d", time.Now().UnixNano()%1000000+2000000)
	df := "FROM test/busybox:1\nRUN echo is-$((1+1)); sleep " + marker + "\n"
	resp, cancel := startBuild(t, c, df)
	defer cancel()
	defer resp.Body.Close()
	readUntilRun(t, resp.Body, s.log)

	type answer struct {
		code int
		body string
	}
	pruned := make(chan answer, 1)
	go func() {
		resp, err := c.Post("http://kiln/v1.41/build/prune?all=1", "", nil)
		if err != nil {
			pruned <- answer{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		pruned <- answer{resp.StatusCode, string(b)}
	}()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(s.log.String(), "POST /build/prune waits for the builds"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("prune did not say it waits for the running build:\n%s", s.log)
		}
	}
	select {
	case a := <-pruned:
		t.Fatalf("prune answered while a build used the store: %d %s", a.code, a.body)
	default:
	}
	if got := ping(t, c, "http://kiln"); got != "200 OK" {
		t.Errorf("/_ping while prune waits: %s", got)
	}
	if !running(t, "sleep "+marker) {
		t.Errorf("the build's RUN is gone while prune waited")
	}
	// the build ends (its client goes away): prune goes ahead
	cancel()
	select {
	case a := <-pruned:
		var rep struct {
			CachesDeleted  []string
			SpaceReclaimed *int64
		}
		if a.code != 200 || json.Unmarshal([]byte(a.body), &rep) != nil || rep.SpaceReclaimed == nil || rep.CachesDeleted == nil {
			t.Errorf("POST /build/prune: %d %s", a.code, a.body)
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("prune did not answer after the build ended:\n%s", s.log)
	}
	if out, _ := kiln(t, "--root", root, "images", "-q"); strings.TrimSpace(out) == "" {
		t.Errorf("prune removed test/busybox:1, a named image")
	}
}
