package main

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/export"
)

// durableArg is the hidden argv[1] of the detached process that finishes
// syncing a store a command closed (cache.Store.Detach).
const durableArg = "__kiln-durable"

// detachDurable starts that process and does not wait for it: the build's
// result is out, only the disk is left to wait for. KILN_SYNC=wait keeps
// the wait in the command itself (the tests use it, so that no process of
// theirs outlives them).
func detachDurable(root string, until int64) error {
	if os.Getenv("KILN_SYNC") == "wait" {
		return errors.New("KILN_SYNC=wait")
	}
	// The files exports replaced go with it: freeing their blocks is
	// disk work too.
	args := append([]string{durableArg, root, strconv.FormatInt(until, 10)}, export.TakeReplaced()...)
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args[0] = "kiln"
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// finishDurable is the detached process: it never returns.
func finishDurable() {
	if len(os.Args) < 4 || os.Args[1] != durableArg {
		return
	}
	for _, p := range os.Args[4:] {
		if export.IsReplacedName(p) {
			os.Remove(p)
		}
	}
	until, err := strconv.ParseInt(os.Args[3], 10, 64)
	if err != nil {
		os.Exit(2)
	}
	if err := cache.FinishDurable(os.Args[2], until); err != nil {
		// Nobody to tell: what the command stored stays trusted for
		// this boot, and is fetched or built again after a reboot.
		os.Exit(1)
	}
	os.Exit(0)
}
