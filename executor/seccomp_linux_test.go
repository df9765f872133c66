package executor

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/testutil"
)

// runBPF interprets the subset of classic BPF that seccompFilter emits.
func runBPF(t *testing.T, prog []unix.SockFilter, data []byte) uint32 {
	t.Helper()
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = binary.LittleEndian.Uint32(data[ins.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			acc &= ins.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(ins.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K:
			var cond bool
			switch ins.Code &^ (unix.BPF_JMP | unix.BPF_K) {
			case unix.BPF_JEQ:
				cond = acc == ins.K
			case unix.BPF_JGE:
				cond = acc >= ins.K
			case unix.BPF_JGT:
				cond = acc > ins.K
			}
			if cond {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		default:
			t.Fatalf("unexpected instruction %#v at %d", ins, pc)
		}
	}
	t.Fatal("program fell off its end")
	return 0
}

func TestSeccompFilter(t *testing.T) {
	if !seccompSupported {
		testutil.SkipHost(t, "no system call table for this architecture")
	}
	prog, err := seccompFilter()
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) > 400 {
		t.Errorf("filter has %d instructions; the ranges should keep it short", len(prog))
	}
	const (
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		nosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
		kill  = unix.SECCOMP_RET_KILL_PROCESS
	)
	native := seccompABIs[0]
	seccompArch, seccompX32Bit := native.arch, native.x32Bit
	tests := []struct {
		name   string
		goarch string // only on this GOARCH; "" for all
		arch   uint32
		nr     uint32
		arg0   uint64
		want   uint32
	}{
		{"read", "", seccompArch, unix.SYS_READ, 0, allow},
		{"execve", "", seccompArch, unix.SYS_EXECVE, 0, allow},
		{"chroot (CAP_SYS_CHROOT is kept)", "", seccompArch, unix.SYS_CHROOT, 0, allow},
		{"ptrace", "", seccompArch, unix.SYS_PTRACE, 0, allow},
		{"last allowed number", "", seccompArch, slices.Max(native.allowed), 0, allow},
		{"mount", "", seccompArch, unix.SYS_MOUNT, 0, eperm},
		{"unshare", "", seccompArch, unix.SYS_UNSHARE, 0, eperm},
		{"setns", "", seccompArch, unix.SYS_SETNS, 0, eperm},
		{"keyctl", "", seccompArch, unix.SYS_KEYCTL, 0, eperm},
		{"add_key", "", seccompArch, unix.SYS_ADD_KEY, 0, eperm},
		{"bpf", "", seccompArch, unix.SYS_BPF, 0, eperm},
		{"init_module", "", seccompArch, unix.SYS_INIT_MODULE, 0, eperm},
		{"unknown number", "", seccompArch, 1000, 0, eperm},
		{"clone for a thread", "", seccompArch, unix.SYS_CLONE, unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND, allow},
		{"clone with a new mount namespace", "", seccompArch, unix.SYS_CLONE, unix.CLONE_NEWNS, eperm},
		{"clone with a new user namespace", "", seccompArch, unix.SYS_CLONE, unix.CLONE_NEWUSER | uint64(unix.SIGCHLD), eperm},
		{"clone3", "", seccompArch, unix.SYS_CLONE3, 0, nosys},
		{"socket inet", "", seccompArch, unix.SYS_SOCKET, unix.AF_INET, allow},
		{"socket vsock", "", seccompArch, unix.SYS_SOCKET, afVSOCK, eperm},
		{"socket kcm", "", seccompArch, unix.SYS_SOCKET, afKCM, eperm},
		{"socket vsock with high bits", "", seccompArch, unix.SYS_SOCKET, 1<<32 | afVSOCK, eperm},
		{"personality linux", "", seccompArch, unix.SYS_PERSONALITY, 0, allow},
		{"personality query", "", seccompArch, unix.SYS_PERSONALITY, 0xffffffff, allow},
		{"personality read-implies-exec", "", seccompArch, unix.SYS_PERSONALITY, 0x0400000, eperm},
		{"x32 ABI", "amd64", seccompArch, seccompX32Bit | unix.SYS_READ, 0, kill},
		{"i386 read", "amd64", unix.AUDIT_ARCH_I386, 3, 0, allow},
		{"i386 socketcall", "amd64", unix.AUDIT_ARCH_I386, 102, 0, allow},
		{"i386 mount", "amd64", unix.AUDIT_ARCH_I386, 21, 0, eperm},
		{"i386 unshare", "amd64", unix.AUDIT_ARCH_I386, 310, 0, eperm},
		{"i386 keyctl", "amd64", unix.AUDIT_ARCH_I386, 288, 0, eperm},
		{"i386 clone with a new user namespace", "amd64", unix.AUDIT_ARCH_I386, 120, unix.CLONE_NEWUSER, eperm},
		{"i386 clone3", "amd64", unix.AUDIT_ARCH_I386, 435, 0, nosys},
		{"i386 socket vsock", "amd64", unix.AUDIT_ARCH_I386, 359, afVSOCK, eperm},
		{"arm64", "amd64", unix.AUDIT_ARCH_AARCH64, 63, 0, kill},
		{"32-bit arm", "arm64", unix.AUDIT_ARCH_ARM, 3, 0, kill},
	}
	for _, tt := range tests {
		if tt.goarch != "" && tt.goarch != runtime.GOARCH {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			data := make([]byte, 64)
			binary.LittleEndian.PutUint32(data[0:], tt.nr)
			binary.LittleEndian.PutUint32(data[4:], tt.arch)
			binary.LittleEndian.PutUint64(data[16:], tt.arg0)
			if got := runBPF(t, prog, data); got != tt.want {
				t.Errorf("action %#x, want %#x", got, tt.want)
			}
		})
	}
}

// probeSource tries what seccomp must refuse and prints the errno of each.
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
	if !seccompSupported {
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
			want := "Seccomp:\t2\nunshare 1\nkeyctl 1\nmount 1\nsetns 1\nsocket-vsock 1\nclone-newns 1\nclone3 38\n"
			if out.String() != want {
				t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
			}
			if strings.Contains(errOut.String(), "panic") {
				t.Errorf("probe crashed: %s", errOut.String())
			}
		})
	}
}
