package main

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/executor"
)

// runFlagSet are the flags that shape what a RUN command sees, as docker
// build's: extra /etc/hosts entries, the size of /dev/shm, resource limits.
type runFlagSet struct {
	addHosts, ulimits []string
	shmSize           string
}

// addRunFlags registers the flags and returns the function that sets
// them on a Sandbox once parsed.
func addRunFlags(fs *pflag.FlagSet) func(*executor.Sandbox) error {
	f := &runFlagSet{}
	fs.StringArrayVar(&f.addHosts, "add-host", nil, "add a line to /etc/hosts of RUN steps: HOST:IP (repeatable); never part of the image")
	fs.StringVar(&f.shmSize, "shm-size", "", "size of /dev/shm in RUN steps, e.g. 128m (default 64m)")
	fs.StringArrayVar(&f.ulimits, "ulimit", nil, "resource limit of RUN commands: NAME=SOFT[:HARD], e.g. nofile=1024:2048; -1 is unlimited (repeatable)")
	return f.apply
}

func (f *runFlagSet) apply(s *executor.Sandbox) error {
	for _, h := range f.addHosts {
		hip, err := executor.ParseHostIP(h)
		if err != nil {
			return usagef("--add-host %s: %v", h, err)
		}
		s.ExtraHosts = append(s.ExtraHosts, hip)
	}
	if f.shmSize != "" {
		n, err := parseSize(f.shmSize)
		if err == nil && n == 0 {
			err = errNotPositive
		}
		if err != nil {
			return usagef("--shm-size %s: %v", f.shmSize, err)
		}
		s.ShmSize = n
	}
	for _, u := range f.ulimits {
		ul, err := executor.ParseUlimit(u)
		if err != nil {
			return usagef("--ulimit %s: %v", u, err)
		}
		s.Ulimits = append(s.Ulimits, ul)
	}
	return nil
}

var errNotPositive = errors.New("want a positive size such as 128m")
