//go:build !linux

package cache

import (
	"context"
	"errors"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// mountState is kept on Linux only, where steps run.
type mountState struct{}

func (s *Store) seedCacheMount(context.Context, string, []LayerInfo, func(v1.Layer) v1.Layer) (*mountState, error) {
	return nil, errors.New("cache mount layers are applied on Linux only")
}

func writeMountState(string, *mountState) error { return nil }

func renameNoReplace(from, to string) error { return os.Rename(from, to) }

// SnapshotCacheMount finds no instance off Linux, where no step runs.
func (s *Store) SnapshotCacheMount(context.Context, string, MountSnapshotOptions) (MountSnapshot, bool, error) {
	return MountSnapshot{}, false, nil
}
