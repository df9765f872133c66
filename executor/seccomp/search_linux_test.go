package seccomp

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// ranges jumps to label for every number of nrs, as ranges: a few dozen
// comparisons instead of three hundred.
func (a *bpfAsm) ranges(nrs []uint32, label string) {
	nrs = slices.Clone(nrs)
	slices.Sort(nrs)
	nrs = slices.Compact(nrs)
	for i := 0; i < len(nrs); {
		j := i
		for j+1 < len(nrs) && nrs[j+1] == nrs[j]+1 {
			j++
		}
		lo, hi := nrs[i], nrs[j]
		if lo == hi {
			a.jumpIf(unix.BPF_JEQ, lo, label)
		} else {
			// nr < lo: skip the next two; nr > hi: skip one; else jump.
			a.prog = append(a.prog,
				unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, Jt: 0, Jf: 2, K: lo},
				unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, Jt: 1, Jf: 0, K: hi})
			a.jump(label)
		}
		i = j + 1
	}
}

// buildLinear is the filter as it was built before the binary search:
// conditions, then ranges of allowed numbers, then ranges per errno, each
// tried in turn. The search must give every number the same outcome.
func buildLinear(tables []abi) ([]unix.SockFilter, error) {
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
		for _, c := range t.conds {
			a.jumpIf(unix.BPF_JEQ, c.nr, fmt.Sprintf("abi%d.nr%d", i, c.nr))
		}
		a.ranges(t.allow, "allow")
		byErrno := map[uint32][]uint32{}
		for _, e := range t.errno {
			byErrno[e.errno] = append(byErrno[e.errno], e.nr)
			errnos[e.errno] = true
		}
		for _, e := range slices.Sorted(maps.Keys(byErrno)) {
			a.ranges(byErrno[e], errnoLabel(e))
		}
		a.jump(errnoLabel(uint32(unix.ENOSYS)))
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

// TestSearchMatchesLinear: for every ABI, every number up to past the
// last one named (and a few far beyond), with argument values that take
// each side of the conditions, the filter answers as the linear one did.
func TestSearchMatchesLinear(t *testing.T) {
	if !Supported() {
		t.Skip("no system call table for this architecture")
	}
	tree, err := Filter()
	if err != nil {
		t.Fatal(err)
	}
	linear, err := buildLinear(abis)
	if err != nil {
		t.Fatal(err)
	}
	args := []uint64{0, 1, 2, 0x10, 0x28, 0x0400000, 0xffffffff, unix.CLONE_NEWNS, unix.CLONE_NEWUSER, unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND}
	checked := 0
	for _, t0 := range abis {
		top := uint32(0)
		for _, nr := range t0.allow {
			top = max(top, nr)
		}
		for _, e := range t0.errno {
			top = max(top, e.nr)
		}
		nrs := []uint32{0x3fffffff, 0x40000000 - 1, 0xffffffff}
		for nr := uint32(0); nr <= top+64; nr++ {
			nrs = append(nrs, nr)
		}
		if t0.x32Bit != 0 {
			nrs = append(nrs, t0.x32Bit, t0.x32Bit|1)
		}
		for _, nr := range nrs {
			for _, arg := range args {
				data := make([]byte, 64)
				binary.LittleEndian.PutUint32(data[0:], nr)
				binary.LittleEndian.PutUint32(data[4:], t0.arch)
				for i := 0; i < 6; i++ {
					binary.LittleEndian.PutUint64(data[16+8*i:], arg)
				}
				if got, want := runBPF(t, tree, data), runBPF(t, linear, data); got != want {
					t.Fatalf("arch %#x nr %d arg %#x: %#x, the linear filter %#x", t0.arch, nr, arg, got, want)
				}
				checked++
			}
		}
	}
	t.Logf("%d cases; %d instructions, the linear filter %d", checked, len(tree), len(linear))
}
