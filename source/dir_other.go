//go:build !linux

package source

import (
	"os"
	"time"
)

type dir struct{}

func openDir(string) (*dir, error)                          { return nil, errNotSupported }
func (d *dir) close()                                       {}
func (d *dir) create(string, os.FileMode) (*os.File, error) { return nil, errNotSupported }
func (d *dir) remove(string)                                {}
func (d *dir) finish(string, string, time.Time) error       { return errNotSupported }
