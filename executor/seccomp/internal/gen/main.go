//go:build linux

// Command gen writes the system call tables of package seccomp from
// Docker's default seccomp profile (the Go module
// github.com/moby/profiles/seccomp, pinned in go.mod) and the system call
// numbers of golang.org/x/sys/unix's zsysnum_linux_*.go files (the
// version in go.mod, read from the module cache). Run it with go generate
// in executor/seccomp; TestGenerated fails when the committed tables
// differ from what it writes.
//
// The profile is evaluated as Docker evaluates it for a container with
// kiln's capabilities (caps.Default) on each architecture kiln has tables
// for, and every rule is resolved to numbers in each ABI of that
// architecture. A system call the profile allows is allowed; one it names
// but does not allow with kiln's capabilities fails with EPERM, as in
// Docker; one it does not name at all fails with ENOSYS, as runc answers
// system calls newer than its profile, so that libc falls back to an
// older call.
package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	profiles "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kiln-build/kiln/executor/caps"
)

// profileModule is the module whose DefaultProfile is the source.
const profileModule = "github.com/moby/profiles/seccomp"

// oldestKernel is the oldest kernel kiln supports: a rule that applies
// from a kernel version up to it is taken as applying, and a rule that
// needs a newer kernel stops the generator, since the tables cannot
// depend on the kernel.
var oldestKernel = profiles.KernelVersion{Kernel: 5, Major: 4}

// argSyscalls are the system calls whose argument rules the tables may
// hold: the kernel reads each compared argument as 32 bits (an int or
// unsigned int, and clone's flags through lower_32_bits), so comparing the
// low word, as the filter does, is exact.
var argSyscalls = []string{"socket", "personality", "clone"}

// abiSpec is one ABI of an architecture kiln has a table for.
type abiSpec struct {
	goarch    string // the zsysnum_linux_GOARCH.go file with its numbers
	audit     string // the AUDIT_ARCH_ name
	auditArch uint32
	x32Bit    uint32
	// aliases maps x/sys names to the kernel's (profile's) names where they
	// differ.
	aliases map[string]string
}

// arch is one architecture: the native name Docker matches "arches"
// against, and its ABIs, native first.
type arch struct {
	name string
	abis []abiSpec
}

var arches = []arch{
	{name: "amd64", abis: []abiSpec{
		{goarch: "amd64", audit: "AUDIT_ARCH_X86_64", auditArch: 0xc000003e, x32Bit: 0x40000000},
		{goarch: "386", audit: "AUDIT_ARCH_I386", auditArch: 0x40000003},
	}},
	{name: "arm64", abis: []abiSpec{
		// asm-generic's __NR3264_fstatat is newfstatat on 64-bit.
		{goarch: "arm64", audit: "AUDIT_ARCH_AARCH64", auditArch: 0xc00000b7, aliases: map[string]string{"fstatat": "newfstatat"}},
	}},
}

func main() {
	files, err := generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for name, src := range files {
		if err := os.WriteFile(name, src, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}

// generate returns the table files, by name in package seccomp's
// directory.
func generate() (map[string][]byte, error) {
	mods, err := modules("golang.org/x/sys", profileModule)
	if err != nil {
		return nil, err
	}
	profile := profiles.DefaultProfile()
	out := map[string][]byte{}
	for _, a := range arches {
		src, err := generateArch(a, profile, mods["golang.org/x/sys"].Dir, mods[profileModule].Version)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.name, err)
		}
		out["zsyscalls_linux_"+a.name+".go"] = src
	}
	return out, nil
}

type module struct{ Path, Version, Dir string }

// modules finds the versions and module cache directories of paths, as
// this module requires them.
func modules(paths ...string) (map[string]module, error) {
	cmd := exec.Command("go", append([]string{"list", "-m", "-json"}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -m %s: %w: %s", strings.Join(paths, " "), err, stderr.String())
	}
	mods := map[string]module{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var m module
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("reading go list output: %w", err)
		}
		mods[m.Path] = m
	}
	for _, p := range paths {
		if mods[p].Dir == "" {
			return nil, fmt.Errorf("module %s is not in the module cache (go mod download %[1]s)", p)
		}
	}
	return mods, nil
}

var sysnumRE = regexp.MustCompile(`(?m)^\s*SYS_(\w+)\s*=\s*(\d+)`)

// sysnums reads the system call numbers of goarch from x/sys/unix, by the
// kernel's names.
func sysnums(xsys string, abi abiSpec) (map[string]uint32, error) {
	p := filepath.Join(xsys, "unix", "zsysnum_linux_"+abi.goarch+".go")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading system call numbers: %w", err)
	}
	nums := map[string]uint32{}
	for _, m := range sysnumRE.FindAllSubmatch(b, -1) {
		name := strings.ToLower(string(m[1]))
		if alias, ok := abi.aliases[name]; ok {
			name = alias
		}
		n, err := strconv.ParseUint(string(m[2]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: SYS_%s: %w", p, m[1], err)
		}
		nums[name] = uint32(n)
	}
	if len(nums) < 200 {
		return nil, fmt.Errorf("%s: only %d system calls found", p, len(nums))
	}
	return nums, nil
}

// cond is one argument comparison, as the tables hold it.
type cond struct {
	arg         uint32
	op          string // the Go constant of package seccomp
	value, mask uint32
}

// abiTable is what the generated file holds for one ABI.
type abiTable struct {
	spec  abiSpec
	names map[uint32]string
	allow []uint32
	errno map[uint32]uint32 // nr → errno, for the profile's EPERM and its own errnos
	conds map[uint32][]cond // nr → alternatives, one of which allows it
}

// applies reports whether a profile rule applies to a container with
// kiln's capabilities on the native architecture arch.
func applies(s *profiles.Syscall, arch string) (bool, error) {
	have := func(c string) bool {
		for _, k := range caps.Default {
			if k.Name == c {
				return true
			}
		}
		return false
	}
	if ex := s.Excludes; ex != nil {
		if slices.Contains(ex.Arches, arch) {
			return false, nil
		}
		for _, c := range ex.Caps {
			if have(c) {
				return false, nil
			}
		}
		if ex.MinKernel != nil {
			return false, fmt.Errorf("rule for %v excludes kernels from %s: the tables cannot depend on the kernel", s.Names, ex.MinKernel)
		}
	}
	if in := s.Includes; in != nil {
		if len(in.Arches) > 0 && !slices.Contains(in.Arches, arch) {
			return false, nil
		}
		for _, c := range in.Caps {
			if !have(c) {
				return false, nil
			}
		}
		if k := in.MinKernel; k != nil && (k.Kernel > oldestKernel.Kernel || k.Kernel == oldestKernel.Kernel && k.Major > oldestKernel.Major) {
			return false, fmt.Errorf("rule for %v needs kernel %s, newer than the oldest kiln supports (%s)", s.Names, k, &oldestKernel)
		}
	}
	return true, nil
}

// toCond converts one rule's arguments into a comparison of the low word.
func toCond(name string, args []specs.LinuxSeccompArg) (cond, error) {
	if !slices.Contains(argSyscalls, name) {
		return cond{}, fmt.Errorf("argument rule for %s: only %v may have them (see argSyscalls)", name, argSyscalls)
	}
	if len(args) != 1 {
		return cond{}, fmt.Errorf("argument rule for %s compares %d arguments; the tables take one", name, len(args))
	}
	a := args[0]
	if a.Value > 0xffffffff || a.ValueTwo > 0xffffffff || a.Index > 5 {
		return cond{}, fmt.Errorf("argument rule for %s: %+v does not fit the low word", name, a)
	}
	c := cond{arg: uint32(a.Index), value: uint32(a.Value)}
	switch a.Op {
	case specs.OpEqualTo:
		c.op = "opEQ"
	case specs.OpNotEqual:
		c.op = "opNE"
	case specs.OpLessThan:
		c.op = "opLT"
	case specs.OpLessEqual:
		c.op = "opLE"
	case specs.OpGreaterThan:
		c.op = "opGT"
	case specs.OpGreaterEqual:
		c.op = "opGE"
	case specs.OpMaskedEqual:
		// libseccomp: (arg & value) == valueTwo.
		c.op, c.mask, c.value = "opMaskedEQ", uint32(a.Value), uint32(a.ValueTwo)
	default:
		return cond{}, fmt.Errorf("argument rule for %s: unknown operator %s", name, a.Op)
	}
	return c, nil
}

func buildABI(a arch, abi abiSpec, profile *profiles.Seccomp, nums map[string]uint32) (*abiTable, error) {
	t := &abiTable{spec: abi, names: map[uint32]string{}, errno: map[uint32]uint32{}, conds: map[uint32][]cond{}}
	for name, nr := range nums {
		if prev, dup := t.names[nr]; !dup || name < prev {
			t.names[nr] = name
		}
	}
	allow := map[uint32]bool{}
	named := map[uint32]bool{}
	for _, s := range profile.Syscalls {
		names := s.Names
		if s.Name != "" {
			names = append(names, s.Name)
		}
		ok, err := applies(s, a.name)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			nr, known := nums[name]
			if !known {
				continue // not a system call of this ABI
			}
			named[nr] = true
			if !ok {
				continue
			}
			t.names[nr] = name
			switch {
			case s.Action == specs.ActAllow && len(s.Args) == 0:
				allow[nr] = true
			case s.Action == specs.ActAllow:
				c, err := toCond(name, s.Args)
				if err != nil {
					return nil, err
				}
				t.conds[nr] = append(t.conds[nr], c)
			case s.Action == specs.ActErrno && s.ErrnoRet != nil && len(s.Args) == 0:
				t.errno[nr] = uint32(*s.ErrnoRet)
			default:
				return nil, fmt.Errorf("rule for %s: action %s with %d arguments is not supported", name, s.Action, len(s.Args))
			}
		}
	}
	for nr := range allow {
		delete(t.conds, nr) // allowed whatever the arguments
		if _, both := t.errno[nr]; both {
			return nil, fmt.Errorf("%s is both allowed and refused", t.names[nr])
		}
		t.allow = append(t.allow, nr)
	}
	for nr := range t.conds {
		if _, both := t.errno[nr]; both {
			return nil, fmt.Errorf("%s has both argument rules and an errno", t.names[nr])
		}
	}
	slices.Sort(t.allow)
	// Named by the profile but not allowed: Docker's default action.
	var eperm int
	if profile.DefaultErrnoRet != nil {
		eperm = int(*profile.DefaultErrnoRet)
	}
	if profile.DefaultAction != specs.ActErrno || eperm != 1 {
		return nil, fmt.Errorf("default action %s errno %d: the tables expect SCMP_ACT_ERRNO with EPERM", profile.DefaultAction, eperm)
	}
	for nr := range named {
		_, c := t.conds[nr]
		_, e := t.errno[nr]
		if !allow[nr] && !c && !e {
			t.errno[nr] = uint32(eperm)
		}
	}
	return t, nil
}

func generateArch(a arch, profile *profiles.Seccomp, xsys, profileVersion string) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by go run ./internal/gen; DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "// From Docker's default seccomp profile (%s %s,\n", profileModule, profileVersion)
	fmt.Fprintf(&b, "// Apache-2.0) for a RUN step's capabilities, with the system call numbers\n")
	fmt.Fprintf(&b, "// of golang.org/x/sys/unix.\n\n")
	fmt.Fprintf(&b, "package seccomp\n\n")
	fmt.Fprintf(&b, "var abis = []abi{\n")
	for _, spec := range a.abis {
		nums, err := sysnums(xsys, spec)
		if err != nil {
			return nil, err
		}
		t, err := buildABI(a, spec, profile, nums)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.goarch, err)
		}
		writeABI(&b, t)
	}
	fmt.Fprintf(&b, "}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting: %w\n%s", err, b.Bytes())
	}
	return src, nil
}

func writeABI(b *bytes.Buffer, t *abiTable) {
	fmt.Fprintf(b, "{\n")
	fmt.Fprintf(b, "arch: %#x, // %s\n", t.spec.auditArch, t.spec.audit)
	if t.spec.x32Bit != 0 {
		fmt.Fprintf(b, "x32Bit: %#x, // x32 shares the architecture; its numbers have this bit\n", t.spec.x32Bit)
	}
	fmt.Fprintf(b, "allow: []uint32{\n")
	for _, nr := range t.allow {
		fmt.Fprintf(b, "%d, // %s\n", nr, t.names[nr])
	}
	fmt.Fprintf(b, "},\n")
	var errnos []uint32
	for nr := range t.errno {
		errnos = append(errnos, nr)
	}
	slices.Sort(errnos)
	fmt.Fprintf(b, "errno: []errnoRule{\n")
	for _, nr := range errnos {
		fmt.Fprintf(b, "{%d, %d}, // %s\n", nr, t.errno[nr], t.names[nr])
	}
	fmt.Fprintf(b, "},\n")
	var condNrs []uint32
	for nr := range t.conds {
		condNrs = append(condNrs, nr)
	}
	slices.Sort(condNrs)
	fmt.Fprintf(b, "conds: []condRule{\n")
	for _, nr := range condNrs {
		cs := slices.Clone(t.conds[nr])
		slices.SortFunc(cs, func(x, y cond) int {
			return cmp.Or(cmp.Compare(x.arg, y.arg), cmp.Compare(x.op, y.op), cmp.Compare(x.value, y.value), cmp.Compare(x.mask, y.mask))
		})
		cs = slices.Compact(cs)
		fmt.Fprintf(b, "{nr: %d, // %s\nany: []cond{\n", nr, t.names[nr])
		for _, c := range cs {
			if c.op == "opMaskedEQ" {
				fmt.Fprintf(b, "{arg: %d, op: %s, mask: %#x, value: %#x},\n", c.arg, c.op, c.mask, c.value)
			} else {
				fmt.Fprintf(b, "{arg: %d, op: %s, value: %d},\n", c.arg, c.op, c.value)
			}
		}
		fmt.Fprintf(b, "}},\n")
	}
	fmt.Fprintf(b, "},\n")
	fmt.Fprintf(b, "},\n")
}
