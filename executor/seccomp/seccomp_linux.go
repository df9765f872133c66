// Package seccomp builds and loads the seccomp filter of a RUN step:
// Docker's default profile for the capabilities the step keeps, compiled
// from generated tables (go generate; see internal/gen) into a classic BPF
// program.
//
// A system call the profile allows is allowed. One it names but does not
// allow fails with EPERM, as in Docker. One it does not name fails with
// ENOSYS, as a kernel without it would answer: libc then falls back to an
// older call (clone3 to clone, whose flags the filter can inspect, is the
// profile's own case of this). A system call of an ABI without a table (x32,
// or a foreign architecture) kills the process.
package seccomp

//go:generate go run ./internal/gen

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets in struct seccomp_data, which a seccomp filter inspects. The
// filter compares the low word of an argument (little-endian): the only
// arguments it looks at are ones the kernel reads as 32 bits, so high bits
// cannot smuggle a refused value past it.
const (
	nrOff   = 0
	archOff = 4
	argOff  = 16 // args[0]; args[i] at argOff + 8*i
)

// abi is the system call table of one ABI of the architecture.
type abi struct {
	arch   uint32 // AUDIT_ARCH_*
	x32Bit uint32 // numbers with this bit belong to an ABI we refuse; 0 for none
	// allow are the numbers allowed whatever their arguments.
	allow []uint32
	// errno are the numbers refused with an errno of their own: EPERM for
	// those the profile names but does not allow.
	errno []errnoRule
	// conds are the numbers allowed when one of their comparisons holds,
	// refused with EPERM otherwise.
	conds []condRule
}

type errnoRule struct {
	nr    uint32
	errno uint32
}

type condRule struct {
	nr  uint32
	any []cond
}

// cond compares argument arg's low word with value: (arg & mask) == value
// for opMaskedEQ.
type cond struct {
	arg         uint32
	op          op
	mask, value uint32
}

type op int

const (
	opEQ op = iota
	opNE
	opLT
	opLE
	opGT
	opGE
	opMaskedEQ
)

// Supported reports whether kiln has a system call table for this
// architecture. Without one a RUN step gets no filter, which the caller
// must refuse unless the build allows it.
func Supported() bool { return len(abis) > 0 }

// Arch names the architecture for messages: "linux/amd64".
func Arch() string { return "linux/" + runtime.GOARCH }

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

// segment is a run of system call numbers, from lo up to the next
// segment's lo, that all go to label.
type segment struct {
	lo    uint32
	label string
}

// segments partitions every number of ABI t (index i) into runs with the
// same outcome: a number with argument conditions goes to its own
// comparisons, an allowed one to allow, one refused with an errno to that
// errno, and one the profile does not name to ENOSYS, as if the kernel
// lacked it. A number in two lists takes the first of that order.
func segments(t abi, i int, errnoLabel func(uint32) string) []segment {
	to := map[uint32]string{}
	for _, c := range t.conds {
		if _, ok := to[c.nr]; !ok {
			to[c.nr] = fmt.Sprintf("abi%d.nr%d", i, c.nr)
		}
	}
	for _, nr := range t.allow {
		if _, ok := to[nr]; !ok {
			to[nr] = "allow"
		}
	}
	errs := slices.Clone(t.errno)
	slices.SortStableFunc(errs, func(a, b errnoRule) int { return int(a.errno) - int(b.errno) })
	for _, e := range errs {
		if _, ok := to[e.nr]; !ok {
			to[e.nr] = errnoLabel(e.errno)
		}
	}
	nosys := errnoLabel(uint32(unix.ENOSYS))
	var segs []segment
	add := func(lo uint32, label string) {
		if len(segs) > 0 && segs[len(segs)-1].label == label {
			return
		}
		segs = append(segs, segment{lo, label})
	}
	next := uint32(0)
	for _, nr := range slices.Sorted(maps.Keys(to)) {
		if nr > next {
			add(next, nosys)
		}
		add(nr, to[nr])
		next = nr + 1
	}
	add(next, nosys)
	return segs
}

// search jumps to the label of the segment holding the number in the
// accumulator, by binary search: a few comparisons for any number, where
// a list of ranges takes dozens. The kernel runs the filter once for every
// number when it is loaded (to cache the ones always allowed), and then at
// every system call the cache does not answer: both follow one path of
// the tree.
func (a *bpfAsm) search(segs []segment, prefix string) {
	n := 0
	var tree func(segs []segment)
	tree = func(segs []segment) {
		if len(segs) == 1 {
			a.jump(segs[0].label)
			return
		}
		mid := len(segs) / 2
		n++
		right := fmt.Sprintf("%s.t%d", prefix, n)
		a.jumpIf(unix.BPF_JGE, segs[mid].lo, right)
		tree(segs[:mid])
		a.label(right)
		tree(segs[mid:])
	}
	tree(segs)
}

// compare jumps to label when c holds for the argument in the
// accumulator; the accumulator is then clobbered.
func (a *bpfAsm) compare(c cond, label string) error {
	switch c.op {
	case opEQ:
		a.jumpIf(unix.BPF_JEQ, c.value, label)
	case opNE:
		a.jumpIfNot(unix.BPF_JEQ, c.value, label)
	case opLT:
		a.jumpIfNot(unix.BPF_JGE, c.value, label)
	case opLE:
		a.jumpIfNot(unix.BPF_JGT, c.value, label)
	case opGT:
		a.jumpIf(unix.BPF_JGT, c.value, label)
	case opGE:
		a.jumpIf(unix.BPF_JGE, c.value, label)
	case opMaskedEQ:
		a.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, c.mask)
		a.jumpIf(unix.BPF_JEQ, c.value, label)
	default:
		return fmt.Errorf("seccomp: unknown comparison %d", c.op)
	}
	return nil
}

// Filter builds the filter for this architecture's tables.
func Filter() ([]unix.SockFilter, error) { return build(abis) }

func build(tables []abi) ([]unix.SockFilter, error) {
	a := &bpfAsm{labels: map[string]int{}, fixups: map[int]string{}}
	ld := func(off uint32) { a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off) }
	errnos := map[uint32]bool{uint32(unix.EPERM): true, uint32(unix.ENOSYS): true}
	errnoLabel := func(e uint32) string { return fmt.Sprintf("errno%d", e) }

	ld(archOff)
	for i, t := range tables {
		a.jumpIf(unix.BPF_JEQ, t.arch, fmt.Sprintf("abi%d", i))
	}
	a.jump("kill")
	for i, t := range tables {
		a.label(fmt.Sprintf("abi%d", i))
		ld(nrOff)
		if t.x32Bit != 0 {
			a.jumpIf(unix.BPF_JGE, t.x32Bit, "kill")
		}
		for _, e := range t.errno {
			errnos[e.errno] = true
		}
		a.search(segments(t, i, errnoLabel), fmt.Sprintf("abi%d", i))
		for _, c := range t.conds {
			a.label(fmt.Sprintf("abi%d.nr%d", i, c.nr))
			for _, cmp := range c.any {
				ld(argOff + 8*cmp.arg)
				if err := a.compare(cmp, "allow"); err != nil {
					return nil, err
				}
			}
			a.jump(errnoLabel(uint32(unix.EPERM)))
		}
	}
	for _, e := range slices.Sorted(maps.Keys(errnos)) {
		a.label(errnoLabel(e))
		a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|e&unix.SECCOMP_RET_DATA)
	}
	a.label("allow")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW)
	a.label("kill")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_KILL_PROCESS)
	return a.assemble()
}

// builtFilter is Filter, built once: Prepare builds it while a sandbox
// child waits for its step.
var builtFilter = sync.OnceValues(Filter)

// Prepare builds the filter ahead of Load.
func Prepare() { builtFilter() }

// Load installs the filter on the calling thread, which the command is
// then forked from and inherits it with. Like Docker, without no_new_privs
// (setuid programs keep working in the build): the init still holds
// CAP_SYS_ADMIN, which is what the kernel asks for instead. The caller must
// be locked to its thread, and needs nothing after this but starting and
// waiting for the command. Without a table for this architecture it fails:
// see Supported.
func Load() error {
	if !Supported() {
		return fmt.Errorf("loading the seccomp filter: kiln has no system call table for %s", Arch())
	}
	filter, err := builtFilter()
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
