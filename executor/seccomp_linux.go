package executor

import (
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets in struct seccomp_data, which a seccomp filter inspects.
const (
	seccompNrOff   = 0
	seccompArchOff = 4
	seccompArg0Off = 16 // args[0]; its low 32 bits on little-endian
)

// cloneNamespaceFlags are the clone flags that create namespaces, which
// Docker's profile refuses without CAP_SYS_ADMIN (CLONE_NEWNS, NEWCGROUP,
// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
const cloneNamespaceFlags = 0x7E020000

// Socket families Docker's profile refuses: AF_KCM and AF_VSOCK.
const (
	afKCM   = 38
	afVSOCK = 40
)

// personalities Docker's profile allows: PER_LINUX, PER_LINUX32,
// UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (a query).
var personalities = []uint32{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}

// bpfAsm assembles a classic BPF program with forward jumps to labels.
// Every conditional jump is emitted as "if cond, fall through to a JA to
// the label, else skip it", so that no distance overflows the 8-bit jt
// and jf offsets however long the program.
type bpfAsm struct {
	prog   []unix.SockFilter
	labels map[string]int
	fixups map[int]string // index of a JA → its label
}

func (a *bpfAsm) stmt(code uint16, k uint32) {
	a.prog = append(a.prog, unix.SockFilter{Code: code, K: k})
}

// jumpIf jumps to label when the comparison op (BPF_JEQ, BPF_JGE ...) of
// the accumulator with k holds.
func (a *bpfAsm) jumpIf(op uint16, k uint32, label string) {
	a.prog = append(a.prog, unix.SockFilter{Code: unix.BPF_JMP | op | unix.BPF_K, Jt: 0, Jf: 1, K: k})
	a.jump(label)
}

// jumpIfNot jumps to label when the comparison does not hold.
func (a *bpfAsm) jumpIfNot(op uint16, k uint32, label string) {
	a.prog = append(a.prog, unix.SockFilter{Code: unix.BPF_JMP | op | unix.BPF_K, Jt: 1, Jf: 0, K: k})
	a.jump(label)
}

func (a *bpfAsm) jump(label string) {
	a.fixups[len(a.prog)] = label
	a.prog = append(a.prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA})
}

func (a *bpfAsm) label(name string) { a.labels[name] = len(a.prog) }

func (a *bpfAsm) assemble() ([]unix.SockFilter, error) {
	for i, l := range a.fixups {
		at, ok := a.labels[l]
		if !ok || at <= i {
			return nil, fmt.Errorf("bpf: bad jump to %q", l)
		}
		a.prog[i].K = uint32(at - i - 1)
	}
	return a.prog, nil
}

// seccompABI is the system call table of one ABI of the architecture.
type seccompABI struct {
	arch   uint32 // AUDIT_ARCH_*
	x32Bit uint32 // numbers with this bit belong to an ABI we refuse; 0 for none
	// The system calls with argument rules.
	socket, personality, clone, clone3 uint32
	// allowed are the numbers allowed whatever their arguments.
	allowed []uint32
}

// seccompFilter builds Docker's default seccomp profile for a process
// without CAP_SYS_ADMIN as a BPF program. Refused system calls fail with
// EPERM, clone3 with ENOSYS (so that libc falls back to clone, whose flags
// can be inspected). A system call of an ABI without a table (x32, or a
// foreign architecture) kills the process: letting it through unfiltered
// would bypass the filter, and failing every call, exit included, would
// leave it spinning.
func seccompFilter() ([]unix.SockFilter, error) {
	a := &bpfAsm{labels: map[string]int{}, fixups: map[int]string{}}
	ld := func(off uint32) { a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off) }

	ld(seccompArchOff)
	for i, abi := range seccompABIs {
		a.jumpIf(unix.BPF_JEQ, abi.arch, fmt.Sprintf("abi%d", i))
	}
	a.jump("kill")
	for i, abi := range seccompABIs {
		a.label(fmt.Sprintf("abi%d", i))
		ld(seccompNrOff)
		if abi.x32Bit != 0 {
			a.jumpIf(unix.BPF_JGE, abi.x32Bit, "kill")
		}
		a.jumpIf(unix.BPF_JEQ, abi.socket, "socket")
		a.jumpIf(unix.BPF_JEQ, abi.personality, "personality")
		a.jumpIf(unix.BPF_JEQ, abi.clone, "clone")
		a.jumpIf(unix.BPF_JEQ, abi.clone3, "enosys")
		// The allowed numbers as ranges: a few dozen comparisons instead
		// of three hundred.
		nrs := slices.Clone(abi.allowed)
		slices.Sort(nrs)
		nrs = slices.Compact(nrs)
		for i := 0; i < len(nrs); {
			j := i
			for j+1 < len(nrs) && nrs[j+1] == nrs[j]+1 {
				j++
			}
			lo, hi := nrs[i], nrs[j]
			if lo == hi {
				a.jumpIf(unix.BPF_JEQ, lo, "allow")
			} else {
				// nr < lo: skip the next two; nr > hi: skip one; else allow.
				a.prog = append(a.prog,
					unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, Jt: 0, Jf: 2, K: lo},
					unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, Jt: 1, Jf: 0, K: hi})
				a.jump("allow")
			}
			i = j + 1
		}
		a.jump("deny")
	}

	// The kernel reads these int arguments from the low 32 bits, and so
	// do we: high bits cannot smuggle a refused value past the filter.
	a.label("socket")
	ld(seccompArg0Off)
	a.jumpIf(unix.BPF_JEQ, afKCM, "deny")
	a.jumpIf(unix.BPF_JEQ, afVSOCK, "deny")
	a.jump("allow")

	a.label("personality")
	ld(seccompArg0Off)
	for _, p := range personalities {
		a.jumpIf(unix.BPF_JEQ, p, "allow")
	}
	a.jump("deny")

	a.label("clone")
	ld(seccompArg0Off)
	a.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, cloneNamespaceFlags)
	a.jumpIf(unix.BPF_JEQ, 0, "allow")
	a.jump("deny")

	a.label("enosys")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS))
	a.label("deny")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM))
	a.label("allow")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW)
	a.label("kill")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_KILL_PROCESS)
	return a.assemble()
}

// loadSeccomp installs the default filter on the calling thread, which the
// command is then forked from and inherits it with. Like Docker, without
// no_new_privs (setuid programs keep working in the build): the init still
// holds CAP_SYS_ADMIN, which is what the kernel asks for instead. The
// caller must be locked to its thread, and needs nothing after this but
// starting and waiting for the command.
func loadSeccomp() error {
	if !seccompSupported {
		return nil
	}
	filter, err := seccompFilter()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("loading the seccomp filter: %w", errno)
	}
	return nil
}
