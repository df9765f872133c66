package planner

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
)

// scratchAhead makes the next step's scratch directory while a step runs:
// three mkdirs in the store's tmp, which spreads new directories over the
// disk (cache/fs_linux.go) at a fraction of a millisecond each, off the
// path from one step to the next.
type scratchAhead struct {
	mu      sync.Mutex
	ready   string // made and not handed out
	making  bool
	stopped bool
}

// scratch makes a step's upper and work dirs, or hands out ones made
// ahead, and starts making the next.
func (b *build) scratch() (dir string, rootfs func([]cache.LayerInfo) executor.Rootfs, err error) {
	sa := &b.scratchDirs
	sa.mu.Lock()
	dir, sa.ready = sa.ready, ""
	ahead := !sa.making && !sa.stopped
	sa.making = sa.making || ahead
	sa.mu.Unlock()
	if dir == "" {
		if dir, err = b.makeScratch(); err != nil {
			return "", nil, err
		}
	}
	if ahead {
		go func() {
			next, err := b.makeScratch()
			sa.mu.Lock()
			sa.making = false
			if err == nil {
				if sa.stopped || sa.ready != "" {
					os.RemoveAll(next)
				} else {
					sa.ready = next
				}
			}
			sa.mu.Unlock()
		}()
	}
	return dir, func(layers []cache.LayerInfo) executor.Rootfs {
		return executor.Rootfs{Lowers: lowers(layers), Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}
	}, nil
}

// makeScratch makes a scratch directory with empty upper and work dirs.
func (b *build) makeScratch() (string, error) {
	dir, err := b.opt.Store.TempDir("step")
	if err != nil {
		return "", fmt.Errorf("creating step directory: %w", err)
	}
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("creating step directory: %w", err)
		}
	}
	return dir, nil
}

// dropScratch removes the scratch directories made ahead and not used,
// once the build's steps are over.
func (b *build) dropScratch() {
	sa := &b.scratchDirs
	sa.mu.Lock()
	sa.stopped = true
	left := sa.ready
	sa.ready = ""
	sa.mu.Unlock()
	if left != "" {
		b.removeLater(left)
	}
}
