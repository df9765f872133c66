package source

import (
	"os"
	"time"

	"github.com/kiln-build/kiln/rooted"
)

// dir is a download directory, written through rooted by descriptor.
type dir struct{ root *rooted.Root }

func openDir(p string) (*dir, error) {
	r, err := rooted.Open(p)
	if err != nil {
		return nil, err
	}
	return &dir{root: r}, nil
}

func (d *dir) close() { d.root.Close() }

func (d *dir) create(name string, perm os.FileMode) (*os.File, error) {
	fd, err := d.root.Dir().Create(name, perm)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), d.root.Path()+"/"+name), nil
}

func (d *dir) remove(name string) { _ = d.root.Dir().Remove(name) }

// finish gives the verified temporary file its times and final name.
func (d *dir) finish(tmp, name string, mtime time.Time) error {
	dd := d.root.Dir()
	if err := dd.Lutimes(tmp, mtime, mtime); err != nil {
		return err
	}
	return dd.Rename(tmp, dd, name)
}
