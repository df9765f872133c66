package seccomp

import (
	"encoding/binary"
	"github.com/kiln-build/kiln/internal/testutil"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// Socket families the profile refuses.
const (
	afALG   = 38
	afVSOCK = 40
	afKCM   = 41
)

// runBPF interprets the subset of classic BPF that Filter emits.
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
	if !Supported() {
		testutil.SkipHost(t, "no system call table for this architecture")
	}
	prog, err := Filter()
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) > 1024 {
		t.Errorf("filter has %d instructions; the ranges should keep it short", len(prog))
	}
	const (
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		nosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
		kill  = unix.SECCOMP_RET_KILL_PROCESS
	)
	native := abis[0]
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
		{"last allowed number", "", seccompArch, slices.Max(native.allow), 0, allow},
		{"mount", "", seccompArch, unix.SYS_MOUNT, 0, eperm},
		{"unshare", "", seccompArch, unix.SYS_UNSHARE, 0, eperm},
		{"setns", "", seccompArch, unix.SYS_SETNS, 0, eperm},
		{"keyctl (not in the profile)", "", seccompArch, unix.SYS_KEYCTL, 0, nosys},
		{"add_key (not in the profile)", "", seccompArch, unix.SYS_ADD_KEY, 0, nosys},
		{"kexec_load (not in the profile)", "", seccompArch, unix.SYS_KEXEC_LOAD, 0, nosys},
		{"bpf", "", seccompArch, unix.SYS_BPF, 0, eperm},
		{"reboot", "", seccompArch, unix.SYS_REBOOT, 0, eperm},
		{"init_module", "", seccompArch, unix.SYS_INIT_MODULE, 0, eperm},
		{"open_by_handle_at", "", seccompArch, unix.SYS_OPEN_BY_HANDLE_AT, 0, eperm},
		{"unknown number", "", seccompArch, 1000, 0, nosys},
		{"number past every table", "", seccompArch, 0x3fffffff, 0, nosys},
		{"clone for a thread", "", seccompArch, unix.SYS_CLONE, unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND, allow},
		{"clone with a new mount namespace", "", seccompArch, unix.SYS_CLONE, unix.CLONE_NEWNS, eperm},
		{"clone with a new user namespace", "", seccompArch, unix.SYS_CLONE, unix.CLONE_NEWUSER | uint64(unix.SIGCHLD), eperm},
		{"clone3", "", seccompArch, unix.SYS_CLONE3, 0, nosys},
		{"socket inet", "", seccompArch, unix.SYS_SOCKET, unix.AF_INET, allow},
		{"socket vsock", "", seccompArch, unix.SYS_SOCKET, afVSOCK, eperm},
		{"socket kcm (allowed since profile v0.3.0)", "", seccompArch, unix.SYS_SOCKET, afKCM, allow},
		{"socket alg", "", seccompArch, unix.SYS_SOCKET, afALG, eperm},
		{"socket unix", "", seccompArch, unix.SYS_SOCKET, unix.AF_UNIX, allow},
		{"socket netlink", "", seccompArch, unix.SYS_SOCKET, unix.AF_NETLINK, allow},
		{"socket inet6", "", seccompArch, unix.SYS_SOCKET, unix.AF_INET6, allow},
		{"socket past every family", "", seccompArch, unix.SYS_SOCKET, 200, eperm},
		{"socket vsock with high bits", "", seccompArch, unix.SYS_SOCKET, 1<<32 | afVSOCK, eperm},
		{"personality linux", "", seccompArch, unix.SYS_PERSONALITY, 0, allow},
		{"personality query", "", seccompArch, unix.SYS_PERSONALITY, 0xffffffff, allow},
		{"personality read-implies-exec", "", seccompArch, unix.SYS_PERSONALITY, 0x0400000, eperm},
		{"x32 ABI", "amd64", seccompArch, seccompX32Bit | unix.SYS_READ, 0, kill},
		{"i386 read", "amd64", unix.AUDIT_ARCH_I386, 3, 0, allow},
		{"i386 socketcall", "amd64", unix.AUDIT_ARCH_I386, 102, 0, allow},
		{"i386 mount", "amd64", unix.AUDIT_ARCH_I386, 21, 0, eperm},
		{"i386 unshare", "amd64", unix.AUDIT_ARCH_I386, 310, 0, eperm},
		{"i386 keyctl", "amd64", unix.AUDIT_ARCH_I386, 288, 0, nosys},
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
