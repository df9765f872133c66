package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/client"
	"github.com/kiln-build/kiln/source"
)

// kiln's client mode: with --host (or KILN_HOST), build, images, push,
// prune and version are requests to a kiln serve (or any Engine API
// 1.41 server) instead of work on the local store. The other commands
// that use the store refuse, rather than quietly use the local one.

// addRemoteFlags adds the persistent flags that make kiln a client.
func addRemoteFlags(fs *pflag.FlagSet) {
	fs.StringP("host", "H", os.Getenv("KILN_HOST"), "send build, images, push, prune and version to the kiln serve at unix:///PATH or tcp://HOST[:PORT] (env KILN_HOST)")
	fs.String("tlscacert", "", "with a tcp --host: the CA certificate (PEM) that signed the server's")
	fs.String("tlscert", "", "with a tcp --host: this client's certificate (PEM), for a server that requires one")
	fs.String("tlskey", "", "with a tcp --host: this client's key (PEM)")
}

// remoteCommands are the commands --host sends to the server; localOnly
// are those that would read or change the local store, refused with
// --host. The rest (login, inspect, completion, …) need no store.
var (
	remoteCommands = []string{"build", "images", "push", "prune", "version"}
	localOnly      = []string{"rmi", "save", "load", "du", "debug", "verify", "info"}
)

// remoteHost is the --host (or KILN_HOST) a command runs against, ""
// for a local run. Only the root's persistent flag counts: kiln serve's
// own --host is an address to listen on, and the build that kiln serve
// runs has no root command at all.
func remoteHost(cmd *cobra.Command) string {
	if cmd.Root() == cmd || cmd.Name() == "serve" {
		return ""
	}
	f := cmd.Root().PersistentFlags().Lookup("host")
	if f == nil {
		return ""
	}
	return f.Value.String()
}

// refuseLocalWithHost is the root's check before any command: a command
// that uses the local store is refused with --host.
func refuseLocalWithHost(cmd *cobra.Command, _ []string) error {
	if h := remoteHost(cmd); h != "" && slices.Contains(localOnly, cmd.Name()) {
		return usagef("kiln %s works on the local store and is not sent to a server; run it without --host (unset KILN_HOST), or on the server's machine (--host %s was given; kiln %s can use a server)", cmd.Name(), h, strings.Join(remoteCommands, ", "))
	}
	return nil
}

// newRemoteClient is the client for cmd's --host.
func newRemoteClient(cmd *cobra.Command) (*client.Client, error) {
	pf := cmd.Root().PersistentFlags()
	get := func(name string) string { return pf.Lookup(name).Value.String() }
	c, err := client.New(client.Options{
		Host:      get("host"),
		TLSCACert: get("tlscacert"),
		TLSCert:   get("tlscert"),
		TLSKey:    get("tlskey"),
		UserAgent: "kiln/" + currentVersion().Version,
	})
	if err != nil {
		return nil, &usageError{err}
	}
	return c, nil
}

// refuseFlags refuses every flag given to cmd that a request to the
// server cannot carry: dropping it would build something else than
// asked.
func refuseFlags(cmd *cobra.Command, carried ...string) error {
	carried = append(carried, "host", "tlscacert", "tlscert", "tlskey")
	var refused []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if !slices.Contains(carried, f.Name) {
			refused = append(refused, "--"+f.Name)
		}
	})
	if len(refused) == 0 {
		return nil
	}
	return usagef("%s: kiln %s with --host sends the request to the server at %s, and the Engine API cannot carry %s; run it locally (without --host, KILN_HOST unset), or leave %s out",
		strings.Join(refused, ", "), cmd.Name(), remoteHost(cmd), plural(len(refused), "this flag", "these flags"), plural(len(refused), "it", "them"))
}

// generatedName is a name for a file the client adds to a context, as
// the docker CLI names a Dockerfile from outside the context.
func generatedName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return ".dockerfile." + hex.EncodeToString(b)
}

// remoteContext is what a build sends: the archive and the Dockerfile's
// name in it.
type remoteContext struct {
	body       io.ReadCloser
	dockerfile string
}

// prepareRemoteContext makes the body of POST /build from kiln build's
// CONTEXT and -f as docker build does: a directory is archived after
// .dockerignore (the Dockerfile and .dockerignore always sent); a
// Dockerfile outside it, or from stdin, is added under a generated
// directory, with its NAME.dockerignore; CONTEXT - is a tar read from
// stdin and sent as it is.
func prepareRemoteContext(ctx context.Context, contextArg, file string, stdin io.Reader) (remoteContext, error) {
	if contextArg == "-" {
		if file == "-" {
			return remoteContext{}, usagef("-f - and CONTEXT -: only one of them can read standard input")
		}
		if filepath.IsAbs(file) {
			return remoteContext{}, usagef("-f %s: with CONTEXT - (a tar on standard input) -f names the Dockerfile inside the archive", file)
		}
		return remoteContext{body: io.NopCloser(stdin), dockerfile: filepath.ToSlash(file)}, nil
	}
	if source.IsRemoteContext(contextArg) {
		return remoteContext{}, usagef("build context %s: kiln build with --host sends a local directory (or a tar on stdin); a git or URL context is not sent over the API: clone or download it and build the directory", contextArg)
	}
	st, err := os.Stat(contextArg)
	if err != nil || !st.IsDir() {
		return remoteContext{}, usagef("build context %q is not a directory", contextArg)
	}
	spec := client.ContextSpec{Dir: contextArg, Keep: []string{".dockerignore"}}
	dfPath, dockerfile := filepath.Join(contextArg, "Dockerfile"), "Dockerfile"
	var extra []byte // the Dockerfile's bytes when it is not in the context
	switch {
	case file == "-":
		dfPath = "-"
		if extra, err = io.ReadAll(stdin); err != nil {
			return remoteContext{}, fmt.Errorf("reading the Dockerfile from standard input: %w", err)
		}
		dockerfile = ""
	case file != "":
		dfPath = file
		if rel, ok := inside(contextArg, file); ok {
			dockerfile = rel
		} else {
			if extra, err = os.ReadFile(file); err != nil {
				return remoteContext{}, fmt.Errorf("reading Dockerfile: %w", err)
			}
			dockerfile = ""
		}
	}
	excludes, err := readDockerignore(contextArg, dfPath)
	if err != nil {
		return remoteContext{}, err
	}
	spec.Excludes = excludes
	if dockerfile != "" {
		spec.Keep = append(spec.Keep, dockerfile, dockerfile+".dockerignore")
	} else {
		// A directory of its own keeps the Dockerfile's base name, which
		// error messages quote (Dockerfile:3), and room for its
		// NAME.dockerignore, which the server reads beside it.
		base := "Dockerfile"
		if dfPath != "-" {
			base = filepath.Base(dfPath)
		}
		dir := generatedName()
		dockerfile = dir + "/" + base
		spec.Extra = append(spec.Extra, client.ExtraFile{Name: dockerfile, Data: extra})
		// Its NAME.dockerignore holds the patterns this build uses and
		// the generated directory itself, as the docker CLI adds its
		// name to .dockerignore: COPY . must not copy it, so the image
		// is the one a local build makes.
		var ig strings.Builder
		for _, p := range excludes {
			ig.WriteString(p + "\n")
		}
		ig.WriteString("/" + dir + "\n")
		spec.Extra = append(spec.Extra, client.ExtraFile{Name: dockerfile + ".dockerignore", Data: []byte(ig.String())})
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(client.WriteContext(ctx, pw, spec)) }()
	return remoteContext{body: pr, dockerfile: dockerfile}, nil
}

// inside returns file's slash-separated path relative to dir when file
// is inside dir (symlinks in either resolved), as docker build decides
// whether -f needs adding to the context.
func inside(dir, file string) (string, bool) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	absFile, err := filepath.Abs(file)
	if err != nil {
		return "", false
	}
	if d, err := filepath.EvalSymlinks(absDir); err == nil {
		absDir = d
	}
	if d, err := filepath.EvalSymlinks(filepath.Dir(absFile)); err == nil {
		absFile = filepath.Join(d, filepath.Base(absFile))
	}
	rel, err := filepath.Rel(absDir, absFile)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	return filepath.ToSlash(rel), true
}
