package main

// The apt + Go-module workload: a Debian base, an apt-get install from a
// flat apt repository and a go build whose modules come from a Go module
// proxy, both served by this program on 127.0.0.1 so the fleet runs offline.
// The .debs and modules are fetched once on the host (apt-get download, go
// mod download) and kept under the cache directory.

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// aptPackages is what the workload's apt-get install asks for: Debian's Go
// toolchain (~80 MB of .debs, ~450 MB installed), which the go build step
// needs anyway. Their other dependencies (libc6, gcc-12-base) are in a
// minbase debootstrap already.
var aptPackages = []string{"golang-go", "golang-1.19-go", "golang-1.19-src", "golang-src"}

// goModFile is the workload's module. Its requirements are old enough for
// bookworm's Go 1.19.
const goModFile = `module example.com/fleetapp

go 1.19

require (
	github.com/BurntSushi/toml v1.3.2
	github.com/google/uuid v1.3.0
	github.com/sirupsen/logrus v1.9.3
	github.com/spf13/cobra v1.7.0
	golang.org/x/net v0.17.0
	golang.org/x/text v0.14.0
	gopkg.in/yaml.v3 v3.0.1
)
`

const mainGo = `package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/net/html"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"gopkg.in/yaml.v3"
)

func main() {
	var name string
	cmd := &cobra.Command{Use: "app", RunE: func(*cobra.Command, []string) error {
		p := message.NewPrinter(language.English)
		p.Printf("%s, commit %d, %d bytes\n", cases.Title(language.English).String(name), commit, 1234567)
		fmt.Println(uuid.NewSHA1(uuid.NameSpaceURL, []byte(name)))
		var conf struct{ Name string }
		if _, err := toml.Decode("Name = 'toml'", &conf); err != nil {
			return err
		}
		out, err := yaml.Marshal(conf)
		if err != nil {
			return err
		}
		doc, err := html.Parse(strings.NewReader("<p>" + string(out) + "</p>"))
		if err != nil {
			return err
		}
		logrus.WithField("root", doc.Type).Info("parsed")
		return nil
	}}
	cmd.Flags().StringVar(&name, "name", "fleet runner", "who to greet")
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
`

// aptGoDockerfile is the workload. The ports of the two servers are build
// args: they are the same for every runner of one fleet run.
const aptGoDockerfile = `ARG BASE
FROM $BASE
ARG APT_PORT
ARG GOPROXY_PORT
# Keep the .debs apt downloads: they are what the apt cache mount is for.
RUN rm -f /etc/apt/apt.conf.d/docker-clean /etc/apt/sources.list /etc/apt/sources.list.d/* && \
	echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache
RUN --mount=type=cache,id=apt,target=/var/cache/apt,sharing=locked \
	--mount=type=cache,id=aptlists,target=/var/lib/apt/lists,sharing=locked \
	echo "deb [trusted=yes] http://127.0.0.1:$APT_PORT/ ./" > /etc/apt/sources.list.d/fleet.list && \
	apt-get update && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ` + "GOLANG_PACKAGES" + `
ENV GOPATH=/root/go GOCACHE=/root/.cache/go-build CGO_ENABLED=0 GOTOOLCHAIN=local
WORKDIR /src
COPY go.mod go.sum ./
COPY *.go ./
RUN --mount=type=cache,id=gomod,target=/root/go/pkg/mod \
	--mount=type=cache,id=gobuild,target=/root/.cache/go-build \
	GOPROXY=http://127.0.0.1:$GOPROXY_PORT GOSUMDB=off GOFLAGS=-mod=mod go build -o /app . && /app
`

// aptGo is the prepared workload: its context and the build args naming
// the two servers.
type aptGo struct {
	context, change string
	buildArgs       []string
}

// prepareAptGo fetches (once, into cache) the .debs and modules, starts the
// apt repository and the module proxy on 127.0.0.1 and writes the context
// under work.
func prepareAptGo(cache, work string) (*aptGo, error) {
	debs := filepath.Join(cache, "debs")
	if err := fetchDebs(debs); err != nil {
		return nil, err
	}
	if err := indexDebs(debs); err != nil {
		return nil, err
	}
	modSrc := filepath.Join(cache, "gomod-src")
	modCache := filepath.Join(cache, "gomodcache")
	if err := fetchModules(modSrc, modCache); err != nil {
		return nil, err
	}
	aptPort, err := serveDir(debs)
	if err != nil {
		return nil, err
	}
	proxyPort, err := serveDir(filepath.Join(modCache, "cache", "download"))
	if err != nil {
		return nil, err
	}
	ctxDir := filepath.Join(work, "context-aptgo")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		return nil, err
	}
	mod, err := os.ReadFile(filepath.Join(modSrc, "go.mod"))
	if err != nil {
		return nil, fmt.Errorf("reading the workload's go.mod: %w", err)
	}
	sum, err := os.ReadFile(filepath.Join(modSrc, "go.sum"))
	if err != nil {
		return nil, fmt.Errorf("reading the workload's go.sum: %w", err)
	}
	df := strings.Replace(aptGoDockerfile, "GOLANG_PACKAGES", strings.Join(aptPackages, " "), 1)
	files := map[string]string{
		"Dockerfile": df,
		"go.mod":     string(mod),
		"go.sum":     string(sum),
		"main.go":    mainGo,
		"commit.go":  commitGo(0),
	}
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(ctxDir, n), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	return &aptGo{
		context: ctxDir,
		change:  "commit.go",
		buildArgs: []string{
			"APT_PORT=" + aptPort,
			"GOPROXY_PORT=" + proxyPort,
		},
	}, nil
}

// commitGo is runner i's commit.go: a new commit changes Go source, so the
// go build step runs again on every runner.
func commitGo(i int) string {
	return fmt.Sprintf("package main\n\nconst commit = %d\n", i)
}

// fetchDebs downloads the workload's .debs with the host's apt-get unless
// they are there already.
func fetchDebs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	have, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(have) >= len(aptPackages) {
		return nil
	}
	cmd := exec.Command("apt-get", append([]string{"download"}, aptPackages...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s (needs the host's apt to reach Debian's archive once, bookworm lists: apt-get update): %v\n%s",
			strings.Join(aptPackages, " "), err, out)
	}
	return nil
}

// indexDebs makes dir a flat apt repository: Packages from
// dpkg-scanpackages and a Release naming its hashes, which apt wants even
// from a [trusted=yes] source.
func indexDebs(dir string) error {
	if _, err := exec.LookPath("dpkg-scanpackages"); err != nil {
		return fmt.Errorf("indexing the apt repository needs dpkg-scanpackages: apt-get install dpkg-dev")
	}
	cmd := exec.Command("dpkg-scanpackages", "--multiversion", ".", "/dev/null")
	cmd.Dir = dir
	cmd.Stderr = nil
	pkgs, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("dpkg-scanpackages in %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Packages"), pkgs, 0o644); err != nil {
		return err
	}
	md := md5.Sum(pkgs)
	sh := sha256.Sum256(pkgs)
	release := fmt.Sprintf("Origin: kiln-fleet\nLabel: kiln-fleet\nSuite: fleet\nCodename: fleet\nArchitectures: amd64 all\nMD5Sum:\n %s %d Packages\nSHA256:\n %s %d Packages\n",
		hex.EncodeToString(md[:]), len(pkgs), hex.EncodeToString(sh[:]), len(pkgs))
	return os.WriteFile(filepath.Join(dir, "Release"), []byte(release), 0o644)
}

// fetchModules resolves the workload's module with the host's go and the
// host's GOPROXY into modCache, whose cache/download tree is then a Go
// module proxy, and leaves the tidied go.mod and go.sum in src. Run once:
// go.mod.fetched, a copy of goModFile, says it is done.
func fetchModules(src, modCache string) error {
	done := filepath.Join(src, "go.mod.fetched")
	if mod, err := os.ReadFile(done); err == nil && string(mod) == goModFile {
		return nil
	}
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(goModFile), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(mainGo), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "commit.go"), []byte(commitGo(0)), 0o644); err != nil {
		return err
	}
	env := append(os.Environ(), "GOMODCACHE="+modCache, "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "GOWORK=off")
	// tidy writes go.sum; download all also fetches the go.mod files of the
	// whole module graph, which Go 1.19 in the image may ask for.
	for _, args := range [][]string{{"mod", "tidy"}, {"mod", "download", "all"}, {"list", "-m", "all"}} {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = src, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s in %s (needs the host's Go module proxy once): %v\n%s", strings.Join(args, " "), src, err, out)
		}
	}
	return os.WriteFile(done, []byte(goModFile), 0o644)
}

// mirrorBytes counts what the apt repository and the module proxy served:
// what a runner's RUN steps downloaded that their cache mounts lacked.
var mirrorBytes atomic.Int64

type countingWriter struct{ http.ResponseWriter }

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	mirrorBytes.Add(int64(n))
	return n, err
}

// serveDir serves dir over plain HTTP on a free loopback port and returns
// the port.
func serveDir(dir string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	fs := http.FileServer(http.Dir(dir))
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.ServeHTTP(countingWriter{w}, r)
	}))
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port, nil
}
