package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/registry"
)

// registryCommands are kiln login, logout and push.
func registryCommands(root *string) []*cobra.Command {
	return []*cobra.Command{newLoginCmd(), newLogoutCmd(), newPushCmd(root)}
}

func newLoginCmd() *cobra.Command {
	var user, password string
	var passwordStdin bool
	var insecure []string
	cmd := &cobra.Command{
		Use:   "login [flags] [REGISTRY]",
		Short: "Log in to a registry (stores the credentials in the Docker config)",
		Long: `Log in to a registry, docker.io when none is given.

The credentials are checked against the registry, then stored as docker login
stores them: in the credential helper of the Docker config (credHelpers,
credsStore) when one is configured, else in $DOCKER_CONFIG/config.json (or
~/.docker/config.json) under "auths". docker, buildx, crane and kiln then all
use them.`,
		Example: `  echo "$TOKEN" | kiln login registry.example.com -u ci --password-stdin`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("login takes at most one REGISTRY argument, got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			reg := "docker.io"
			if len(args) == 1 {
				reg = args[0]
			}
			if user == "" {
				return usagef("login needs a username: -u USER")
			}
			switch {
			case passwordStdin && password != "":
				return usagef("--password and --password-stdin are mutually exclusive")
			case passwordStdin:
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("reading the password from standard input: %w", err)
				}
				// As docker: one trailing newline is the shell's, not the
				// password's.
				password = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			case password != "":
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
			default:
				return usagef("login needs a password: pipe it to --password-stdin")
			}
			if password == "" {
				return usagef("login: the password is empty")
			}
			res, err := newResolver(insecure, nil, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := res.CheckLogin(cmd.Context(), reg, user, password); err != nil {
				return err
			}
			where, err := registry.SaveLogin(reg, user, password)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "credentials for %s stored in %s\n", registry.ServerAddress(reg), where)
			fmt.Fprintln(cmd.OutOrStdout(), "Login Succeeded")
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&user, "username", "u", "", "username")
	fl.StringVarP(&password, "password", "p", "", "password (visible to other users of the machine: prefer --password-stdin)")
	fl.BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	fl.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP or unverified TLS for HOST[:PORT] (repeatable)")
	return cmd
}

func newLogoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout [REGISTRY]",
		Short: "Remove the stored credentials of a registry",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("logout takes at most one REGISTRY argument, got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			reg := "docker.io"
			if len(args) == 1 {
				reg = args[0]
			}
			found, err := registry.Logout(reg)
			if err != nil {
				return err
			}
			if !found {
				fmt.Fprintf(cmd.OutOrStdout(), "Not logged in to %s\n", registry.ServerAddress(reg))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removing login credentials for %s\n", registry.ServerAddress(reg))
			return nil
		},
	}
}

func newPushCmd(root *string) *cobra.Command {
	var insecure []string
	var ociLayoutName string
	cmd := &cobra.Command{
		Use:   "push [flags] SOURCE [DEST]",
		Short: "Push an image from kiln's store, an OCI layout or an archive",
		Long: `Push an image to a registry.

SOURCE is a name in kiln's store (given to an image by kiln build -t), or a
path: an OCI image layout directory, an OCI archive (-o type=oci) or a docker
archive (-o type=docker). DEST is where to push; it defaults to SOURCE's name
(for a path, the name the archive records). The pushed digest is printed on
standard output.`,
		Example: `  kiln build -t registry.example.com/team/app:1.4 .
  kiln push registry.example.com/team/app:1.4
  kiln push app.tar registry.example.com/team/app:1.4`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("push takes SOURCE and an optional DEST, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if remoteHost(cmd) != "" {
				return runRemotePush(cmd, args)
			}
			ctx := cmd.Context()
			img, srcName, cleanup, err := pushSource(*root, args[0], ociLayoutName)
			if err != nil {
				return err
			}
			defer cleanup()
			afterStoreRead()
			dest := srcName
			if len(args) == 2 {
				dest = args[1]
			}
			if dest == "" {
				return usagef("push: %s records no image name; give DEST", args[0])
			}
			res, err := newResolver(insecure, nil, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			pushed, err := res.Push(ctx, img, []string{dest})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "pushed %s@%s\n", dest, pushed[0].Digest)
			fmt.Fprintln(cmd.OutOrStdout(), pushed[0].Digest)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP or unverified TLS for HOST[:PORT] (repeatable)")
	fl.StringVar(&ociLayoutName, "name", "", "for a layout or archive holding several images, the name of the one to push")
	return cmd
}

// pushSource finds the image to push and the name it goes by: a path
// (layout, OCI or docker archive) when src exists on disk, else a name in
// the store under root. cleanup removes what reading it unpacked, once the
// push is over.
func pushSource(root, src, pick string) (img export.Artifact, srcName string, cleanup func(), err error) {
	cleanup = func() {}
	if st, err := os.Stat(src); err == nil {
		if st.IsDir() {
			img, srcName, err = layoutSource(src, pick)
			return img, srcName, cleanup, err
		}
		return archiveSource(src, pick)
	}
	return storeSource(root, src)
}

// storeSource reads an image from the store. Its blobs are read during the
// push, so the store stays open (locked against prune) until cleanup.
func storeSource(root, src string) (v1.Image, string, func(), error) {
	nothing := func() {}
	if _, err := name.ParseReference(src); err != nil {
		return nil, "", nothing, usagef("push: %q is neither a file nor an image name: %v", src, err)
	}
	st, err := storeOpen(root)
	if err != nil {
		return nil, "", nothing, err
	}
	img, found, err := st.Image(src)
	if err != nil {
		st.Close()
		return nil, "", nothing, fmt.Errorf("reading %s from kiln's store: %w", src, err)
	}
	if !found {
		st.Close()
		return nil, "", nothing, fmt.Errorf("push: no image named %s in kiln's store at %s (name one with kiln build -t %s)", src, root, src)
	}
	return img, src, func() { st.Close() }, nil
}

// Annotations naming an image in an OCI index, as BuildKit, containerd and
// kiln write them; the ref.name one is often just a tag.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

func layoutSource(dir, pick string) (export.Artifact, string, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, "", fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	var candidates []v1.Descriptor
	for _, d := range im.Manifests {
		// An index is an image with its attestations (kiln build
		// --provenance): pushed whole, so the attestation travels.
		if !d.MediaType.IsImage() && !d.MediaType.IsIndex() {
			continue
		}
		if pick != "" && !nameMatches(layoutName(d), pick) {
			continue
		}
		candidates = append(candidates, d)
	}
	switch {
	case len(candidates) == 0 && pick != "":
		return nil, "", fmt.Errorf("OCI layout %s has no image named %s", dir, pick)
	case len(candidates) == 0:
		return nil, "", fmt.Errorf("OCI layout %s has no image manifest (kiln pushes single-platform images)", dir)
	}
	// Several entries may name one image (one per -t); they must agree.
	d := candidates[0]
	for _, c := range candidates[1:] {
		if c.Digest != d.Digest {
			return nil, "", usagef("push: OCI layout %s holds several images; choose one with --name", dir)
		}
	}
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, "", fmt.Errorf("reading index %s of %s: %w", d.Digest, dir, err)
		}
		return child, layoutName(d), nil
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("reading image %s of %s: %w", d.Digest, dir, err)
	}
	return img, layoutName(d), nil
}

// layoutName is the full image name an index entry records, or "".
func layoutName(d v1.Descriptor) string {
	for _, n := range []string{d.Annotations[annotationImageName], d.Annotations[annotationRefName]} {
		if n == "" || !strings.ContainsAny(n, "/:") {
			continue
		}
		if _, err := name.NewTag(n); err == nil {
			return n
		}
	}
	return ""
}

func nameMatches(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	na, err1 := name.NewTag(a)
	nb, err2 := name.NewTag(b)
	return err1 == nil && err2 == nil && na.Name() == nb.Name()
}

// archiveSource reads an OCI archive (unpacked into a temporary layout,
// since go-containerregistry reads layouts from directories only) or a
// docker archive (read in place).
func archiveSource(file, pick string) (export.Artifact, string, func(), error) {
	nop := func() {}
	members, err := tarMembers(file)
	if err != nil {
		return nil, "", nop, err
	}
	if members["index.json"] && members["oci-layout"] {
		dir, err := os.MkdirTemp("", "kiln-push-")
		if err != nil {
			return nil, "", nop, fmt.Errorf("unpacking %s: %w", file, err)
		}
		// The layers are read from dir during the push: remove it after.
		cleanup := func() { os.RemoveAll(dir) }
		if err := untarLayout(file, dir); err != nil {
			cleanup()
			return nil, "", nop, err
		}
		img, n, err := layoutSource(dir, pick)
		if err != nil {
			cleanup()
			return nil, "", nop, err
		}
		return img, n, cleanup, nil
	}
	if !members["manifest.json"] {
		return nil, "", nop, fmt.Errorf("reading %s: neither an OCI archive (index.json, oci-layout) nor a docker archive (manifest.json)", file)
	}
	img, n, err := dockerArchiveSource(file, pick)
	return img, n, nop, err
}

// dockerArchiveSource reads a docker archive in place.
func dockerArchiveSource(file, pick string) (v1.Image, string, error) {
	var tag *name.Tag
	if pick != "" {
		t, err := name.NewTag(pick)
		if err != nil {
			return nil, "", usagef("--name %q: %v", pick, err)
		}
		tag = &t
	}
	opener := func() (io.ReadCloser, error) { return os.Open(file) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", file, err)
	}
	if len(m) != 1 && tag == nil {
		return nil, "", usagef("push: %s holds %d images; choose one with --name", file, len(m))
	}
	img, err := tarball.Image(opener, tag)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", file, err)
	}
	n := pick
	if n == "" && len(m[0].RepoTags) > 0 {
		n = m[0].RepoTags[0]
	}
	return img, n, nil
}

func tarMembers(file string) (map[string]bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	defer f.Close()
	out := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s as a tar archive: %w", file, err)
		}
		out[path.Clean(h.Name)] = true
	}
}

// untarLayout unpacks the regular files and directories of an OCI archive,
// refusing any name that would land outside dir.
func untarLayout(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("unpacking %s: %w", file, err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpacking %s: %w", file, err)
		}
		rel := path.Clean(h.Name)
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("unpacking %s: entry %q leaves the archive", file, h.Name)
		}
		dest := filepath.Join(dir, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dest, 0o755); err != nil {
				return fmt.Errorf("unpacking %s: %w", file, err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
				return fmt.Errorf("unpacking %s: %w", file, err)
			}
			out, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return fmt.Errorf("unpacking %s: %w", file, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpacking %s: %w", file, err)
			}
		}
	}
}
