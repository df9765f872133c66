package executor

import (
	"bytes"
	"context"
	"github.com/kiln-build/kiln/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/executor/seccomp"
)

// probeSource tries what seccomp must refuse and prints the errno of each:
// EPERM for what Docker's profile names but refuses, ENOSYS for what it
// does not name (keyctl, an unknown number) and for clone3.
const probeSource = `package main

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

func main() {
	try := func(name string, trap uintptr, a ...uintptr) {
		args := append(a, 0, 0, 0, 0, 0, 0)
		_, _, e := syscall.RawSyscall6(trap, args[0], args[1], args[2], args[3], args[4], args[5])
		fmt.Printf("%s %d\n", name, int(e))
	}
	// By number: syscall lacks some names, on i386 especially.
	keyctl, setns, socket, clone := uintptr(250), uintptr(308), uintptr(41), uintptr(56)
	if runtime.GOARCH == "386" {
		keyctl, setns, socket, clone = 288, 346, 359, 120
	}
	try("unshare", syscall.SYS_UNSHARE, syscall.CLONE_NEWNS)
	try("keyctl", keyctl, 0, 0)
	src, tgt, fs := []byte("none\x00"), []byte("/tmp\x00"), []byte("tmpfs\x00")
	try("mount", syscall.SYS_MOUNT, uintptr(unsafe.Pointer(&src[0])), uintptr(unsafe.Pointer(&tgt[0])), uintptr(unsafe.Pointer(&fs[0])))
	try("setns", setns, 0, 0)
	try("socket-vsock", socket, 40, syscall.SOCK_STREAM)
	try("clone-newns", clone, syscall.CLONE_NEWNS|uintptr(syscall.SIGCHLD))
	try("clone3", 435, 0, 0)
	try("unknown", 1000)
}
`

// buildProbe compiles probeSource as a static binary into dir/probe for
// goarch.
func buildProbe(t *testing.T, dir, goarch string) {
	t.Helper()
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "main.go"), []byte(probeSource), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n\ngo 1.21\n"), 0o644))
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		testutil.SkipHostf(t, "cannot build the probe: %v\n%s", err, out)
	}
}

func TestRunSeccomp(t *testing.T) {
	needRoot(t)
	if !seccomp.Supported() {
		testutil.SkipHost(t, "no system call table for this architecture")
	}
	base := busyboxRootfs(t)
	goarchs := []string{runtime.GOARCH}
	if runtime.GOARCH == "amd64" {
		goarchs = append(goarchs, "386")
	}
	for _, goarch := range goarchs {
		t.Run(goarch, func(t *testing.T) {
			bin := t.TempDir()
			buildProbe(t, bin, goarch)
			if goarch == "386" {
				if err := exec.Command(filepath.Join(bin, "probe")).Run(); err != nil {
					testutil.SkipHostf(t, "this kernel runs no i386 binaries: %v", err)
				}
			}
			var out, errOut bytes.Buffer
			err := Run(context.Background(), RunSpec{
				Rootfs: newRootfs(t, base),
				Env:    []string{testPath},
				Mounts: []Mount{{Type: "bind", Source: bin, Target: "/probe", Readonly: true}},
				Args:   []string{"/bin/sh", "-c", "grep Seccomp: /proc/self/status; /probe/probe"},
				Stdout: &out, Stderr: &errOut,
			})
			if err != nil {
				t.Fatalf("%v; stderr %q", err, errOut.String())
			}
			want := "Seccomp:\t2\nunshare 1\nkeyctl 38\nmount 1\nsetns 1\nsocket-vsock 1\nclone-newns 1\nclone3 38\nunknown 38\n"
			if out.String() != want {
				t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
			}
			if strings.Contains(errOut.String(), "panic") {
				t.Errorf("probe crashed: %s", errOut.String())
			}
		})
	}
}
