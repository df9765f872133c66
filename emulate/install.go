package emulate

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/platforms"

	"github.com/kiln-build/kiln/internal/userns"
)

// QEMU is one architecture Debian's qemu-user-static emulates, with the ELF
// header magic and mask Debian registers it under (/usr/lib/binfmt.d).
type QEMU struct {
	Arch     string // QEMU's name: aarch64, arm, riscv64
	Platform string // the OCI platform it runs, normalized
	Magic    string // hex, 20 bytes of ELF header
	Mask     string // hex, same length
}

// Handler names follow Debian's (qemu-ARCH), so that a handler Debian's
// binfmt-support or systemd-binfmt registered without F is the one replaced.
func (q QEMU) name() string { return "qemu-" + q.Arch }

// Emulators lists the architectures `kiln binfmt --install` can register:
// those with an OCI platform. The magic and mask are Debian's (and QEMU's
// scripts/qemu-binfmt-conf.sh): they match executables and shared objects
// of any ELF OS ABI.
var Emulators = []QEMU{
	{"aarch64", "linux/arm64", "7f454c460201010000000000000000000200b700", "ffffffffffffff00fffffffffffffffffeffffff"},
	{"arm", "linux/arm/v7", "7f454c4601010100000000000000000002002800", "ffffffffffffff00fffffffffffffffffeffffff"},
	{"riscv64", "linux/riscv64", "7f454c460201010000000000000000000200f300", "ffffffffffffff00fffffffffffffffffeffffff"},
	{"ppc64le", "linux/ppc64le", "7f454c4602010100000000000000000002001500", "fffffffffffffffcfffffffffffffffffeffff00"},
	{"s390x", "linux/s390x", "7f454c4602020100000000000000000000020016", "fffffffffffffffcfffffffffffffffffffeffff"},
	{"mips64el", "linux/mips64le", "7f454c4602010100000000000000000002000800", "ffffffffffffff00fefffffffffffffffeffffff"},
	{"loongarch64", "linux/loong64", "7f454c4602010100000000000000000002000201", "fffffffffffffffc00fffffffffffffffeffffff"},
	{"x86_64", "linux/amd64", "7f454c4602010100000000000000000002003e00", "fffffffffffefe00fffffffffffffffffeffffff"},
	{"i386", "linux/386", "7f454c4601010100000000000000000002000300", "fffffffffffefe00fffffffffffffffffeffffff"},
}

// InterpreterDir is where Debian's qemu-user-static puts its emulators.
var InterpreterDir = "/usr/bin"

// preserveDir holds Debian's qemu-ARCH-static links named ARCH-binfmt-P: run
// under that name, QEMU expects the P flag's extra argument (the original
// argv[0], which multi-call binaries and `exec -a` rely on).
var preserveDir = "/usr/libexec/qemu-binfmt"

// Interpreter returns the emulator to register for q and its flags: Debian's
// own choice (OPF) when the package is installed, else the plain static
// binary with F alone. An empty path means qemu-user-static is missing.
func (q QEMU) Interpreter() (path, flags string) {
	static := filepath.Join(InterpreterDir, "qemu-"+q.Arch+"-static")
	if _, err := os.Stat(static); err != nil {
		return "", ""
	}
	if p := filepath.Join(preserveDir, q.Arch+"-binfmt-P"); filepath.Dir(static) == "/usr/bin" {
		if t, err := filepath.EvalSymlinks(p); err == nil && t == static {
			return p, "OPF"
		}
	}
	return static, "F"
}

// Action says what Install did for one platform.
type Action struct {
	Platform    string
	Name        string // the binfmt_misc entry that runs it now
	Interpreter string
	// Did is "registered", "replaced" (an entry without F, or disabled,
	// was removed first) or "kept" (a usable entry was there).
	Did string
}

// Select turns the --platform list of `kiln binfmt --install` (arm64,
// linux/arm/v7, riscv64, all …) into emulators. "all" means every one
// whose interpreter is installed and whose platform is not native.
func Select(list []string) ([]QEMU, error) {
	var out []QEMU
	add := func(q QEMU) {
		if !slices.Contains(out, q) {
			out = append(out, q)
		}
	}
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if s == "all" {
			for _, q := range Emulators {
				if p, _ := q.Interpreter(); p != "" && !IsNative(q.Platform) {
					add(q)
				}
			}
			continue
		}
		q, err := emulatorFor(s)
		if err != nil {
			return nil, err
		}
		if IsNative(q.Platform) {
			return nil, fmt.Errorf("platform %s runs natively here: it needs no emulator (leave it out of --platform)", s)
		}
		add(q)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no QEMU emulator to register: install them with `apt-get install qemu-user-static`, or name platforms with --platform (arm64, arm, riscv64, ppc64le, s390x …)")
	}
	return out, nil
}

func emulatorFor(s string) (QEMU, error) {
	spec := s
	if !strings.Contains(spec, "/") {
		spec = "linux/" + spec
	}
	p, err := platforms.Parse(spec)
	if err != nil {
		return QEMU{}, fmt.Errorf("platform %q: %w (use names like arm64, linux/arm/v7, riscv64 or all)", s, err)
	}
	p = platforms.Normalize(p)
	for _, q := range Emulators {
		qp := platforms.Normalize(platforms.MustParse(q.Platform))
		// one handler runs every 32-bit ARM variant
		if qp.OS == p.OS && qp.Architecture == p.Architecture && (qp.Variant == p.Variant || p.Architecture == "arm") {
			return q, nil
		}
	}
	var known []string
	for _, q := range Emulators {
		known = append(known, q.Platform)
	}
	return QEMU{}, fmt.Errorf("platform %s: kiln has no QEMU emulator for it (known: %s)", s, strings.Join(known, ", "))
}

// Install registers a binfmt_misc handler with the F flag for each emulator,
// mounting binfmt_misc at Dir first if needed. It is idempotent: a usable
// handler for the platform is kept, one without F (or disabled) is removed
// and registered again. It changes the whole machine, so it needs real root
// and must only run when the user asks (kiln binfmt --install).
func Install(qs []QEMU) ([]Action, error) {
	if os.Geteuid() != 0 || userns.Running() {
		return nil, errors.New("registering binfmt_misc handlers changes the whole machine and needs real root: run `sudo kiln binfmt --install`")
	}
	if err := mountBinfmt(); err != nil {
		return nil, err
	}
	var done []Action
	for _, q := range qs {
		a, err := install(q)
		if err != nil {
			return done, err
		}
		done = append(done, a)
	}
	return done, nil
}

func install(q QEMU) (Action, error) {
	a := Action{Platform: q.Platform, Name: q.name()}
	interp, flags := q.Interpreter()
	if interp == "" {
		return a, fmt.Errorf("registering a handler for %s: %s is missing: run `apt-get install qemu-user-static` first", q.Platform, filepath.Join(InterpreterDir, "qemu-"+q.Arch+"-static"))
	}
	a.Interpreter = interp
	hs, err := Handlers()
	if err != nil {
		return a, err
	}
	a.Did = "registered"
	var kept *Action
	for _, h := range hs {
		if !slices.Contains(h.Platforms, q.Platform) {
			continue
		}
		if h.Usable() {
			// Another usable entry (docker's tonistiigi/binfmt, say)
			// already runs it: adding ours would change nothing but the
			// machine's state.
			if kept == nil {
				kept = &Action{Platform: q.Platform, Name: h.Name, Interpreter: h.Interpreter, Did: "kept"}
			}
			continue
		}
		// The kernel tries the newest entry first: an unusable one must
		// go even when a usable one stays.
		if err := Remove(h.Name); err != nil {
			return a, err
		}
		a.Did = "replaced"
	}
	if kept != nil {
		return *kept, nil
	}
	// An entry of our name for another magic (a hand-made one) would make
	// the registration fail with EEXIST.
	if _, err := os.Stat(filepath.Join(Dir, q.name())); err == nil {
		if err := Remove(q.name()); err != nil {
			return a, err
		}
		a.Did = "replaced"
	}
	e := Entry{Name: q.name(), Enabled: true, Magic: q.Magic, Mask: q.Mask, Interpreter: interp, Flags: flags}
	if err := Register(e); err != nil {
		return a, err
	}
	return a, nil
}

// Entry is a binfmt_misc registration, as the kernel shows it in
// Dir/NAME and takes it in Dir/register (magic type only).
type Entry struct {
	Name        string
	Enabled     bool
	Interpreter string
	Flags       string // letters: F, O, P, C
	Offset      string
	Magic, Mask string // hex
}

// ReadEntry reads Dir/name.
func ReadEntry(name string) (Entry, error) {
	f, err := os.Open(filepath.Join(Dir, name))
	if err != nil {
		return Entry{}, fmt.Errorf("reading binfmt_misc entry %s: %w", name, err)
	}
	defer f.Close()
	e := Entry{Name: name, Offset: "0"}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "enabled":
			e.Enabled = true
		case "interpreter":
			e.Interpreter = v
		case "flags:":
			e.Flags = strings.TrimSpace(v)
		case "offset":
			e.Offset = v
		case "magic":
			e.Magic = v
		case "mask":
			e.Mask = v
		}
	}
	if err := sc.Err(); err != nil {
		return Entry{}, fmt.Errorf("reading binfmt_misc entry %s: %w", name, err)
	}
	return e, nil
}

// Register writes e to Dir/register. A disabled entry is registered, then
// disabled, so that it can be put back as it was.
func Register(e Entry) error {
	magic, err := hex.DecodeString(e.Magic)
	if err != nil {
		return fmt.Errorf("registering %s: magic: %w", e.Name, err)
	}
	mask, err := hex.DecodeString(e.Mask)
	if err != nil {
		return fmt.Errorf("registering %s: mask: %w", e.Name, err)
	}
	offset := e.Offset
	if offset == "0" {
		offset = ""
	}
	line := fmt.Sprintf(":%s:M:%s:%s:%s:%s:%s", e.Name, offset, escape(magic), escape(mask), e.Interpreter, e.Flags)
	if err := writeFile(filepath.Join(Dir, "register"), line); err != nil {
		return fmt.Errorf("registering binfmt_misc handler %s for %s: %w", e.Name, e.Interpreter, err)
	}
	if !e.Enabled {
		return Disable(e.Name)
	}
	return nil
}

// Remove unregisters Dir/name.
func Remove(name string) error {
	if err := writeFile(filepath.Join(Dir, name), "-1"); err != nil {
		return fmt.Errorf("removing binfmt_misc handler %s: %w", name, err)
	}
	return nil
}

// Disable turns Dir/name off without removing it.
func Disable(name string) error {
	if err := writeFile(filepath.Join(Dir, name), "0"); err != nil {
		return fmt.Errorf("disabling binfmt_misc handler %s: %w", name, err)
	}
	return nil
}

// escape writes every byte as \xHH: the kernel's parser takes that form, and
// it keeps ':' and NUL out of the line.
func escape(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, `\x%02x`, c)
	}
	return sb.String()
}

func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	// one write: binfmt_misc parses each write as a whole request
	_, err = f.Write([]byte(s))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
