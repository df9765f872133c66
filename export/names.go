package export

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// imageName is one -t name in the two spellings exporters write: the full
// one containerd keeps in io.containerd.image.name, and the familiar one
// `docker load` shows and expects in manifest.json RepoTags.
type imageName struct {
	full     string // docker.io/library/busybox:latest
	familiar string // busybox:latest
	tag      string // latest (org.opencontainers.image.ref.name)
}

// parseNames normalises names the way docker does: a missing tag becomes
// "latest", a Docker Hub name gains its implied registry and "library/",
// any other registry host is kept as written.
func parseNames(names []string) ([]imageName, error) {
	out := make([]imageName, 0, len(names))
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if strings.Contains(n, "@") {
			return nil, fmt.Errorf("parsing image name %q: a digest cannot name an exported image; use a tag", n)
		}
		t, err := name.NewTag(n)
		if err != nil {
			return nil, fmt.Errorf("parsing image name %q: %w", n, err)
		}
		repo, tag := t.RepositoryStr(), t.TagStr()
		in := imageName{tag: tag}
		if t.RegistryStr() == name.DefaultRegistry {
			in.full = "docker.io/" + repo + ":" + tag
			in.familiar = strings.TrimPrefix(repo, "library/") + ":" + tag
		} else {
			in.full = t.RegistryStr() + "/" + repo + ":" + tag
			in.familiar = in.full
		}
		// -t a -t a is one name, not two index entries.
		if seen[in.full] {
			continue
		}
		seen[in.full] = true
		out = append(out, in)
	}
	return out, nil
}
