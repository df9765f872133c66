// Package devices holds the device rules of a RUN step: the nodes of its
// minimal /dev, the allow-list of Docker's default device cgroup, and the
// cgroup v2 BPF program that enforces the list.
package devices

import (
	"fmt"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Rule allows access ("r", "w", "m" for mknod) to devices of a Type
// ('c' or 'b'); -1 is any major or minor.
type Rule struct {
	Type         byte
	Major, Minor int64
	Access       string
}

// Node is a device node of the sandbox's /dev.
type Node struct {
	Name         string
	Major, Minor uint32
}

// Nodes are the nodes of a minimal /dev, as Docker and BuildKit provide.
var Nodes = []Node{
	{"null", 1, 3},
	{"zero", 1, 5},
	{"full", 1, 7},
	{"random", 1, 8},
	{"urandom", 1, 9},
	{"tty", 5, 0},
}

// Default is Docker's default device allow-list: mknod of anything (an
// image may ship device nodes, debootstrap makes them), and reading and
// writing only the nodes of our /dev and ptys. Without it a root step
// keeping CAP_MKNOD could create the node of the host's disk and read it.
var Default = []Rule{
	{'c', -1, -1, "m"}, {'b', -1, -1, "m"},
	{'c', 1, 3, "rwm"}, {'c', 1, 5, "rwm"}, {'c', 1, 7, "rwm"}, // null zero full
	{'c', 1, 8, "rwm"}, {'c', 1, 9, "rwm"}, // random urandom
	{'c', 5, 0, "rwm"}, {'c', 5, 1, "rwm"}, {'c', 5, 2, "rwm"}, // tty console ptmx
	{'c', 136, -1, "rwm"}, // pts
}

// V1 is the rule as cgroup v1's devices.allow takes it: "c 1:3 rwm".
func (r Rule) V1() string {
	num := func(n int64) string {
		if n < 0 {
			return "*"
		}
		return strconv.FormatInt(n, 10)
	}
	return fmt.Sprintf("%c %s:%s %s", r.Type, num(r.Major), num(r.Minor), r.Access)
}

// ebpfInsn is struct bpf_insn.
type ebpfInsn struct {
	code uint8
	regs uint8 // dst in the low nibble, src in the high one
	off  int16
	imm  int32
}

// ebpfAsm assembles an eBPF program with forward jumps to labels.
type ebpfAsm struct {
	prog   []ebpfInsn
	labels map[string]int
	fixups map[int]string
}

func (a *ebpfAsm) insn(code uint8, dst, src uint8, off int16, imm int32) {
	a.prog = append(a.prog, ebpfInsn{code: code, regs: dst | src<<4, off: off, imm: imm})
}

// jump emits a jump (code with BPF_K, comparing dst with imm) to label.
func (a *ebpfAsm) jump(code uint8, dst uint8, imm int32, label string) {
	a.fixups[len(a.prog)] = label
	a.insn(code, dst, 0, 0, imm)
}

func (a *ebpfAsm) label(name string) { a.labels[name] = len(a.prog) }

func (a *ebpfAsm) assemble() ([]ebpfInsn, error) {
	for i, l := range a.fixups {
		at, ok := a.labels[l]
		if !ok || at <= i || at-i-1 > 0x7fff {
			return nil, fmt.Errorf("ebpf: bad jump to %q", l)
		}
		a.prog[i].off = int16(at - i - 1)
	}
	return a.prog, nil
}

// filter builds the BPF_PROG_TYPE_CGROUP_DEVICE program that enforces
// rules on cgroup v2, where the device controller of v1 is a BPF program
// attached to the cgroup. It returns 1 to allow, 0 to deny.
func filter(rules []Rule) ([]ebpfInsn, error) {
	const (
		ldxW   = unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W
		movX   = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_X
		movK   = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K
		andK   = unix.BPF_ALU64 | unix.BPF_AND | unix.BPF_K
		rshK   = unix.BPF_ALU64 | unix.BPF_RSH | unix.BPF_K
		jneK   = unix.BPF_JMP | unix.BPF_JNE | unix.BPF_K
		ja     = unix.BPF_JMP | unix.BPF_JA
		exit   = unix.BPF_JMP | unix.BPF_EXIT
		r0, r1 = 0, 1
		// struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}
		// in r1; access_type is access << 16 | type.
		rType, rAccess, rMajor, rMinor, rTmp = 3, 4, 5, 6, 7
	)
	a := &ebpfAsm{labels: map[string]int{}, fixups: map[int]string{}}
	a.insn(ldxW, 2, r1, 0, 0)
	a.insn(movX, rType, 2, 0, 0)
	a.insn(andK, rType, 0, 0, 0xffff)
	a.insn(movX, rAccess, 2, 0, 0)
	a.insn(rshK, rAccess, 0, 0, 16)
	a.insn(ldxW, rMajor, r1, 4, 0)
	a.insn(ldxW, rMinor, r1, 8, 0)
	for i, r := range rules {
		next := "rule" + strconv.Itoa(i+1)
		typ := int32(unix.BPF_DEVCG_DEV_CHAR)
		if r.Type == 'b' {
			typ = unix.BPF_DEVCG_DEV_BLOCK
		}
		a.jump(jneK, rType, typ, next)
		if r.Major >= 0 {
			a.jump(jneK, rMajor, int32(r.Major), next)
		}
		if r.Minor >= 0 {
			a.jump(jneK, rMinor, int32(r.Minor), next)
		}
		var acc int32
		for _, c := range r.Access {
			switch c {
			case 'r':
				acc |= unix.BPF_DEVCG_ACC_READ
			case 'w':
				acc |= unix.BPF_DEVCG_ACC_WRITE
			case 'm':
				acc |= unix.BPF_DEVCG_ACC_MKNOD
			}
		}
		// Every access asked for must be allowed by this rule.
		a.insn(movX, rTmp, rAccess, 0, 0)
		a.insn(andK, rTmp, 0, 0, ^acc&0xffff)
		a.jump(jneK, rTmp, 0, next)
		a.jump(ja, 0, 0, "allow")
		a.label(next)
	}
	a.insn(movK, r0, 0, 0, 0)
	a.insn(exit, 0, 0, 0, 0)
	a.label("allow")
	a.insn(movK, r0, 0, 0, 1)
	a.insn(exit, 0, 0, 0, 0)
	return a.assemble()
}

// AttachFilter loads the device filter for rules and attaches it to the
// cgroup v2 directory dir. The program lives as long as the cgroup:
// removing the cgroup detaches it. Any error means the cgroup has no
// filter of ours: the caller must guard devices another way or refuse.
func AttachFilter(dir string, rules []Rule) error {
	prog, err := filter(rules)
	if err != nil {
		return err
	}
	license := []byte("Apache-2.0\x00")
	// union bpf_attr, as BPF_PROG_LOAD reads it.
	load := struct {
		progType, insnCnt uint32
		insns, license    uint64
		logLevel, logSize uint32
		logBuf            uint64
		kernVersion       uint32
		progFlags         uint32
		progName          [unix.BPF_OBJ_NAME_LEN]byte
	}{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(prog)),
		insns:    uint64(uintptr(unsafe.Pointer(&prog[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	copy(load.progName[:], "kiln_devices")
	// The verifier gives up with EAGAIN when a signal is pending, and Go
	// preempts goroutines with signals (SIGURG): try again, as libbpf does.
	var (
		fd    uintptr
		errno syscall.Errno
	)
	for range 10 {
		fd, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&load)), unsafe.Sizeof(load))
		if errno != unix.EAGAIN {
			break
		}
	}
	runtime.KeepAlive(prog)
	runtime.KeepAlive(license)
	if errno != 0 {
		return fmt.Errorf("loading the device filter: %w", errno)
	}
	defer unix.Close(int(fd))
	cg, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening cgroup %s: %w", dir, err)
	}
	defer unix.Close(cg)
	attach := struct {
		targetFd, attachBpfFd, attachType, attachFlags uint32
	}{uint32(cg), uint32(fd), unix.BPF_CGROUP_DEVICE, unix.BPF_F_ALLOW_MULTI}
	_, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_ATTACH, uintptr(unsafe.Pointer(&attach)), unsafe.Sizeof(attach))
	if errno != 0 {
		// EPERM included: an ancestor's filter (kiln in a container) may
		// forbid programs below it, but nothing says that filter is as
		// strict as ours (a privileged container allows every device).
		return fmt.Errorf("attaching the device filter to %s: %w", dir, errno)
	}
	return nil
}
