// Command mkbase makes kiln's test base images outside tests, from the same
// code the tests use: a busybox image from Debian's busybox-static and a
// debian:bookworm image from debootstrap.
//
//	mkbase -busybox -o DIR            add busybox:latest to an OCI layout
//	mkbase -busybox -push HOST:PORT   push HOST:PORT/library/busybox:latest
//	mkbase -busybox -platforms linux/arm64 …  also busybox:arm64 (Debian's
//	                                  busybox-static:arm64; -debian: debian:bookworm-arm64)
//	mkbase -busybox -serve ADDR       serve an in-process registry holding it
//	                                  on ADDR (127.0.0.1:0 picks a port) until
//	                                  killed; prints the address and, with
//	                                  -addr-file, writes it there once ready
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/internal/testutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkbase:", err)
		os.Exit(1)
	}
}

// base is one image mkbase can make, with its repository and tag.
type base struct {
	repo, tag string
	make      func(context.Context) (v1.Image, error)
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkbase", flag.ContinueOnError)
	busybox := fs.Bool("busybox", false, "make the busybox base (library/busybox:latest)")
	debian := fs.Bool("debian", false, "make the debian base (library/debian:bookworm; debootstrap, cached in "+testutil.CacheDir()+")")
	foreign := fs.String("platforms", "", "also make the bases for these other `PLATFORMS` (comma-separated, e.g. linux/arm64,linux/arm/v7), tagged busybox:ARCH and debian:bookworm-ARCH with Debian's ARCH (arm64, armhf); debian under QEMU: see kiln binfmt")
	out := fs.String("o", "", "add the images to the OCI layout directory `DIR`")
	pushTo := fs.String("push", "", "push the images to the registry `HOST:PORT`")
	serve := fs.String("serve", "", "serve the images from an in-process registry on `ADDR` until killed")
	addrFile := fs.String("addr-file", "", "with -serve, write the registry address to `FILE` once the images are in it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var bases []base
	if *busybox {
		bases = append(bases, base{"library/busybox", "latest", func(context.Context) (v1.Image, error) { return testutil.NewBusyboxImage() }})
	}
	if *debian {
		bases = append(bases, base{"library/debian", "bookworm", func(ctx context.Context) (v1.Image, error) {
			return testutil.NewDebianImage(ctx, testutil.CacheDir())
		}})
	}
	for _, pl := range strings.Split(*foreign, ",") {
		if pl = strings.TrimSpace(pl); pl == "" {
			continue
		}
		arch, err := testutil.DebianArch(pl)
		if err != nil {
			return fmt.Errorf("-platforms: %w", err)
		}
		if *busybox {
			bases = append(bases, base{"library/busybox", arch, func(ctx context.Context) (v1.Image, error) {
				return testutil.NewForeignBusyboxImage(ctx, pl)
			}})
		}
		if *debian {
			bases = append(bases, base{"library/debian", "bookworm-" + arch, func(ctx context.Context) (v1.Image, error) {
				return testutil.NewDebianImageFor(ctx, testutil.CacheDir(), pl)
			}})
		}
	}
	if len(bases) == 0 {
		return errors.New("choose at least one of -busybox and -debian")
	}
	if *out == "" && *pushTo == "" && *serve == "" {
		return errors.New("choose at least one of -o DIR, -push HOST:PORT and -serve ADDR")
	}

	imgs := make([]v1.Image, len(bases))
	for i, b := range bases {
		img, err := b.make(ctx)
		if err != nil {
			return fmt.Errorf("making %s:%s: %w", b.repo, b.tag, err)
		}
		imgs[i] = img
	}
	if *out != "" {
		for i, b := range bases {
			if err := export.OCILayout(ctx, imgs[i], *out, []string{b.repo + ":" + b.tag}); err != nil {
				return err
			}
			fmt.Printf("%s:%s written to %s\n", b.repo, b.tag, *out)
		}
	}
	if *pushTo != "" {
		if err := pushAll(ctx, *pushTo, bases, imgs); err != nil {
			return err
		}
	}
	if *serve != "" {
		return serveRegistry(ctx, *serve, *addrFile, bases, imgs)
	}
	return nil
}

// pushAll pushes the images through an HTTP transport of its own and
// closes that transport's connections before it returns. Pushing blobs
// concurrently, the client sometimes dials a connection it then never
// sends a request on; the server counts such a connection as about to
// send one for its first 5 seconds, so a connection left open by the
// push into mkbase's own registry kept that registry's Shutdown waiting
// past its deadline.
func pushAll(ctx context.Context, host string, bases []base, imgs []v1.Image) error {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Also closes connections whose dials complete after this returns.
	defer tr.CloseIdleConnections()
	for i, b := range bases {
		ref := host + "/" + b.repo + ":" + b.tag
		r, err := name.ParseReference(ref)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", ref, err)
		}
		if err := remote.Write(r, imgs[i], remote.WithContext(ctx), remote.WithTransport(tr)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		fmt.Println(ref)
	}
	return nil
}

func serveRegistry(ctx context.Context, addr, addrFile string, bases []base, imgs []v1.Image) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	// A wildcard listener is still reached, and named, through loopback.
	host := ln.Addr().(*net.TCPAddr)
	if host.IP.IsUnspecified() {
		host = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: host.Port}
	}
	hostport := host.String()
	if err := pushAll(ctx, hostport, bases, imgs); err != nil {
		srv.Close()
		return err
	}
	// The address file appears only now, with the images in place, so a
	// script waiting for it can build at once.
	if addrFile != "" {
		tmp := filepath.Join(filepath.Dir(addrFile), "."+filepath.Base(addrFile)+".tmp")
		if err := os.WriteFile(tmp, []byte(hostport+"\n"), 0o644); err != nil {
			srv.Close()
			return fmt.Errorf("writing address file: %w", err)
		}
		if err := os.Rename(tmp, addrFile); err != nil {
			srv.Close()
			return fmt.Errorf("writing address file: %w", err)
		}
	}
	fmt.Printf("serving on %s until interrupted\n", hostport)

	select {
	case err := <-errc:
		return fmt.Errorf("serving registry: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("stopping registry: %w", err)
	}
	if addrFile != "" {
		os.Remove(addrFile)
	}
	return nil
}
