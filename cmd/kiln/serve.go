package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/serve"
)

func newServeCmd(root *string) *cobra.Command {
	var hosts []string
	var tlsFiles serve.TLSFiles
	var allow []string
	var maxContext string
	var builds *serveBuildFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the Docker Engine API's build and image endpoints on a socket",
		Long: `Serve the part of the Docker Engine API that building and shipping images
uses, so that the docker CLI, docker-py, docker-compose and other Engine API
clients work with kiln unchanged:

  DOCKER_HOST=unix:///run/kiln/kiln.sock docker version

A unix socket is created mode 0660 with group kiln when that group exists,
else 0600 (root only): whoever can open it can build as root. A normal
user's kiln serve listens on $XDG_RUNTIME_DIR/kiln/kiln.sock, 0600. A tcp://
address other than loopback needs --tlscacert, --tlscert and --tlskey,
and then only clients with a certificate signed by that CA get in.

Under systemd socket activation (LISTEN_FDS) kiln serves the sockets it
was given and ignores --host. Builds run at once (--max-concurrent-builds),
and a step two of them need at the same time runs once. SIGTERM or SIGINT
stops it: it stops accepting, lets builds in flight finish for up to
--shutdown-timeout and cancels the rest, removes its sockets and exits 0.
See docs/serve.md.`,
		Example: `  kiln serve
  kiln serve --host unix:///run/kiln/kiln.sock --host tcp://127.0.0.1:2375
  kiln serve --host tcp://0.0.0.0:2376 --tlscacert ca.pem --tlscert cert.pem --tlskey key.pem`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := tlsFiles.TLSConfig()
			if err != nil {
				return &usageError{err}
			}
			ls, err := serve.Activated()
			if err != nil {
				return err
			}
			if ls == nil {
				if ls, err = serve.Listen(hosts, cfg, socketGroup()); err != nil {
					return &usageError{err}
				}
			} else if cmd.Flags().Changed("host") {
				fmt.Fprintln(os.Stderr, "kiln serve: socket activated: serving the sockets systemd passed, not --host")
			}
			for _, l := range ls {
				fmt.Fprintf(os.Stderr, "kiln serve: listening on %s\n", l.Address)
			}
			maxSize, err := parseContextSize(maxContext)
			if err != nil {
				return err
			}
			// Held while serving: a build's contexts are unpacked in the
			// store's tmp, which the store clears when nobody holds it
			// (a build opening it between two others would).
			store, err := cache.Open(*root)
			if err != nil {
				return fmt.Errorf("opening kiln's store at %s (set --root or KILN_ROOT of kiln serve): %w", *root, err)
			}
			defer store.Close()
			srv := serve.New(newServeBackend(*root))
			closeEvents, err := builds.setup(srv, serve.BuildOptions{
				ScratchDir: filepath.Join(store.Root, "tmp"), MaxContextSize: maxSize,
				ContextHashDir: filepath.Join(store.Root, "contexthash"),
				HostNetwork:    slices.Contains(allow, "network.host")}, root, allow)
			if err != nil {
				return err
			}
			defer closeEvents()
			srv.SetImages(newServeImages(store))
			err = srv.Run(cmd.Context(), ls)
			fmt.Fprintln(os.Stderr, "kiln serve: stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&hosts, "host", "H", []string{defaultServeHost()}, "address to serve on: unix:///PATH or tcp://HOST:PORT (repeatable)")
	f.StringVar(&tlsFiles.CACert, "tlscacert", "", "CA certificate (PEM): clients must present a certificate it signed")
	f.StringVar(&tlsFiles.Cert, "tlscert", "", "the server's TLS certificate (PEM)")
	f.StringVar(&tlsFiles.Key, "tlskey", "", "the server's TLS key (PEM)")
	f.StringArrayVar(&allow, "allow", nil, "grant builds an entitlement (repeatable), as kiln build --allow: network.host lets POST /build use networkmode=host")
	f.StringVar(&maxContext, "max-context-size", "10g", "largest build context a client may send, e.g. 500m or 10g; a bigger one is refused with 413")
	builds = addServeBuildFlags(f)
	return cmd
}

// parseContextSize reads --max-context-size: bytes, or with a k, m, g
// or t suffix (powers of 1024).
func parseContextSize(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(strings.ToLower(v)), "b"))
	mult := int64(1)
	if s != "" {
		if i := strings.IndexByte("kmgt", s[len(s)-1]); i >= 0 {
			mult = int64(1) << (10 * (i + 1))
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, usagef("--max-context-size %q: want a positive size such as 500m or 10g", v)
	}
	return n * mult, nil
}

// defaultServeHost is /run/kiln/kiln.sock for root; a normal user's kiln
// serve, like rootless dockerd, listens in the user's runtime directory.
func defaultServeHost() string {
	if os.Geteuid() == 0 && !executor.Rootless() {
		return serve.DefaultHost
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return "unix://" + filepath.Join(d, "kiln", "kiln.sock")
	}
	return serve.DefaultHost
}

// socketGroup is the group given kiln serve's sockets: the kiln group for
// root's; none for a normal user's, whose user namespace maps no other
// group (the socket stays the user's own, 0600).
func socketGroup() string {
	if os.Geteuid() == 0 && !executor.Rootless() {
		return serve.SocketGroup
	}
	return ""
}

// serveBackend answers the server's questions from kiln's store.
type serveBackend struct {
	root    string
	version serve.Version
}

func newServeBackend(root string) *serveBackend {
	v := currentVersion()
	return &serveBackend{root: root, version: serve.NewVersion(v.Version, v.GitCommit, v.BuildTime)}
}

func (b *serveBackend) Version() serve.Version { return b.version }

func (b *serveBackend) Info(ctx context.Context) (serve.Info, error) {
	info := serve.NewInfo()
	info.ServerVersion = b.version.Version
	abs, err := filepath.Abs(b.root)
	if err != nil {
		return info, fmt.Errorf("finding the store: %w", err)
	}
	info.DockerRootDir = abs
	// As kiln info: only look, never create a store where there is none.
	if _, err := os.Stat(filepath.Join(abs, "blobs")); errors.Is(err, fs.ErrNotExist) {
		return info, nil
	}
	s, err := cache.Open(abs)
	if err != nil {
		return info, fmt.Errorf("opening kiln's store at %s (set --root or KILN_ROOT of kiln serve): %w", abs, err)
	}
	defer s.Close()
	entries, err := s.Images()
	if err != nil {
		return info, fmt.Errorf("listing the images in the store: %w", err)
	}
	// docker info counts images, not names
	ids := map[string]bool{}
	for _, e := range entries {
		ids[e.ID.Hex] = true
	}
	info.Images = len(ids)
	return info, nil
}
