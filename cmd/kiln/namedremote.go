package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-build/kiln/planner"
	"github.com/kiln-build/kiln/source"
	"github.com/kiln-build/kiln/sshforward"
)

func init() { planner.FetchRemoteContext = fetchNamedContext }

// fetchNamedContext fetches a git or https --build-context into dest, an
// empty directory whose parent is the build's own scratch directory. As
// BuildKit: a git URL is the checkout (its subdir as the root); another
// https URL is not unpacked but is a directory holding the download as a
// file named "context". A git remote over ssh is fetched with the
// build's --ssh default agent, served from dest's parent.
func fetchNamedContext(ctx context.Context, url, dest string, ssh sshforward.Agents) error {
	if source.IsGit(url) {
		scratch := filepath.Dir(dest)
		fetched, err := source.FetchContext(ctx, url, filepath.Join(scratch, "fetch"), source.WithSSHAgents(ssh, scratch))
		if err != nil {
			return err
		}
		// In place of the empty dest: the checkout's root becomes the
		// context.
		if err := os.Remove(dest); err != nil {
			return fmt.Errorf("moving the checkout into place: %w", err)
		}
		if err := os.Rename(fetched.Dir, dest); err != nil {
			return fmt.Errorf("moving the checkout into place: %w", err)
		}
		return nil
	}
	_, err := source.HTTP(ctx, url, dest, source.HTTPOptions{Filename: "context"})
	return err
}
