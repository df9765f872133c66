package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/client"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/registry"
)

// runRemoteImages is kiln images with --host: GET /images/json, printed
// as kiln images prints the local store.
func runRemoteImages(cmd *cobra.Command, quiet bool) error {
	if err := refuseFlags(cmd, "quiet"); err != nil {
		return err
	}
	c, err := newRemoteClient(cmd)
	if err != nil {
		return err
	}
	images, err := c.Images(cmd.Context())
	if err != nil {
		return remoteErr(c, "listing images", err)
	}
	var rows []imageRow
	for _, im := range images {
		id := strings.TrimPrefix(im.ID, "sha256:")
		row := imageRow{idHex: id, created: time.Unix(im.Created, 0), size: im.Size}
		if len(im.RepoTags) == 0 {
			rows = append(rows, row)
		}
		for _, t := range im.RepoTags {
			row.name = t
			rows = append(rows, row)
		}
	}
	return printImages(cmd.OutOrStdout(), rows, quiet)
}

// remoteErr explains an error of a request: a 501 is a server that does
// not serve the endpoint.
func remoteErr(c *client.Client, what string, err error) error {
	if client.NotImplemented(err) {
		return fmt.Errorf("%s on %s: the server does not serve this endpoint (%w); run the command without --host, or upgrade the server", what, c.Host(), err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// runRemotePush is kiln push with --host: the server pushes an image of
// its store (POST /images/{name}/push) with this machine's credentials
// for the registry (docker login, kiln login) in X-Registry-Auth. A DEST
// is first given to the image as a name (POST /images/{name}/tag).
func runRemotePush(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	if err := refuseFlags(cmd); err != nil {
		return err
	}
	src, dest := args[0], args[0]
	if len(args) == 2 {
		dest = args[1]
	}
	if fileExists(src) {
		return usagef("push %s: with --host kiln pushes an image of the server's store by name, and %s is a local file; push it without --host", src, src)
	}
	ref, err := name.ParseReference(dest)
	if err != nil {
		return usagef("push %s: %v", dest, err)
	}
	tagged, ok := ref.(name.Tag)
	if !ok {
		return usagef("push %s: name a tag, not a digest: the registry gives the pushed manifest its digest", dest)
	}
	c, err := newRemoteClient(cmd)
	if err != nil {
		return err
	}
	repo := strings.TrimSuffix(dest, ":"+tagged.TagStr())
	if len(args) == 2 {
		if err := c.Tag(ctx, src, repo, tagged.TagStr()); err != nil {
			return remoteErr(c, "naming "+src+" "+dest, err)
		}
	}
	auth, err := registryAuth(tagged.Context().RegistryStr())
	if err != nil {
		return err
	}
	st, err := c.Push(ctx, repo, tagged.TagStr(), auth)
	if err != nil {
		return remoteErr(c, "pushing "+dest, err)
	}
	defer st.Close()
	printer, err := openProgress("auto", cmd.ErrOrStderr(), "")
	if err != nil {
		return err
	}
	defer progress.Close(printer)
	step := printer.Step("[push] " + dest)
	digest, err := renderPush(st, step)
	if err != nil {
		step.Fail(err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return remoteErr(c, "pushing "+dest, err)
	}
	step.Done()
	progress.Close(printer)
	fmt.Fprintf(cmd.ErrOrStderr(), "pushed %s@%s\n", dest, digest)
	fmt.Fprintln(cmd.OutOrStdout(), digest)
	return nil
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// renderPush shows a push's message stream as step's output and
// transfers, and returns the pushed digest.
func renderPush(st *client.Stream, step progress.Step) (string, error) {
	var digest string
	for {
		m, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		if err := m.Err(); err != nil {
			return "", err
		}
		if len(m.Aux) > 0 {
			var aux client.PushAux
			if json.Unmarshal(m.Aux, &aux) == nil && aux.Digest != "" {
				digest = aux.Digest
			}
			continue
		}
		switch {
		case m.ID != "" && m.ProgressDetail != nil && m.ProgressDetail.Total > 0:
			progress.Transfer(step, m.ID, m.ProgressDetail.Current, m.ProgressDetail.Total)
		case m.Status != "":
			fmt.Fprintln(step, strings.TrimSpace(m.ID+" "+m.Status))
		}
	}
	if digest == "" {
		return "", errors.New("the server ended the push without the pushed digest (was it stopped?)")
	}
	return digest, nil
}

// registryAuth is X-Registry-Auth for reg: the credentials docker login
// and kiln login stored (config.json, credential helpers), or none.
func registryAuth(reg string) (*client.AuthConfig, error) {
	r, err := name.NewRegistry(reg)
	if err != nil {
		return nil, usagef("registry %s: %v", reg, err)
	}
	a, err := authn.DefaultKeychain.Resolve(r)
	if err != nil {
		return nil, fmt.Errorf("reading the credentials of %s (docker login, kiln login): %w", reg, err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		return nil, fmt.Errorf("reading the credentials of %s (docker login, kiln login): %w", reg, err)
	}
	return &client.AuthConfig{
		Username:      cfg.Username,
		Password:      cfg.Password,
		Auth:          cfg.Auth,
		IdentityToken: cfg.IdentityToken,
		RegistryToken: cfg.RegistryToken,
		ServerAddress: registry.ServerAddress(reg),
	}, nil
}

// runRemotePrune is kiln prune with --host: POST /build/prune.
func runRemotePrune(cmd *cobra.Command, all bool, keepStorage string, filters []string) error {
	if err := refuseFlags(cmd, "all", "keep-storage", "filter"); err != nil {
		return err
	}
	keep, until, err := pruneLimits(keepStorage, filters)
	if err != nil {
		return err
	}
	o := client.PruneOptions{All: all, KeepStorage: keep}
	if until > 0 {
		// dockerd reads a Go duration: 7d is sent as 168h0m0s
		o.Filters = map[string][]string{"until": {until.String()}}
	}
	c, err := newRemoteClient(cmd)
	if err != nil {
		return err
	}
	rep, err := c.BuildPrune(cmd.Context(), o)
	if err != nil {
		return remoteErr(c, "pruning the build cache", err)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Deleted %s\n", storePlural(len(rep.CachesDeleted), "build cache entry"))
	fmt.Fprintf(out, "Total reclaimed space: %s\n", storeHumanSize(rep.SpaceReclaimed))
	return nil
}

// runRemoteVersion is kiln version with --host: this kiln's version and
// the server's (GET /version), as docker version shows both.
func runRemoteVersion(cmd *cobra.Command, asJSON bool) error {
	if err := refuseFlags(cmd, "json"); err != nil {
		return err
	}
	c, err := newRemoteClient(cmd)
	if err != nil {
		return err
	}
	local := currentVersion()
	sv, err := c.ServerVersion(cmd.Context())
	if err != nil {
		return remoteErr(c, "asking the version", err)
	}
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), struct {
			Client versionInfo    `json:"client"`
			Server client.Version `json:"server"`
		}{local, sv})
	}
	w := cmd.OutOrStdout()
	commit := local.GitCommit
	if local.Modified {
		commit += " (modified)"
	}
	fmt.Fprintln(w, "Client: kiln")
	table(w, [][2]string{
		{"Version", local.Version},
		{"API version", client.APIVersion},
		{"Git commit", commit},
		{"Go version", local.GoVersion},
		{"OS/Arch", local.OS + "/" + local.Arch},
	})
	fmt.Fprintln(w)
	server := sv.Platform.Name
	if server == "" {
		server = "Docker Engine"
	}
	fmt.Fprintf(w, "Server: %s (%s)\n", server, c.Host())
	api := sv.APIVersion
	if sv.MinAPIVersion != "" {
		api += " (minimum version " + sv.MinAPIVersion + ")"
	}
	rows := [][2]string{
		{"Version", sv.Version},
		{"API version", api},
		{"Git commit", sv.GitCommit},
		{"Go version", sv.GoVersion},
		{"OS/Arch", sv.Os + "/" + sv.Arch},
	}
	if sv.KernelVersion != "" {
		rows = append(rows, [2]string{"Kernel version", sv.KernelVersion})
	}
	if sv.BuildTime != "" {
		rows = append(rows, [2]string{"Built", sv.BuildTime})
	}
	table(w, rows)
	return nil
}
