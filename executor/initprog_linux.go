package executor

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/initbin"
)

// The sandbox init of RUN steps is kiln-init, the small static program
// `make build` embeds (cmd/kiln-init): its start costs a fraction of a
// re-executed kiln's, whose package initialisation alone (BuildKit's
// parser, protobuf, HTTP, compressors) takes milliseconds at every step.
//
// It is executed from a sealed memfd rather than from a file: nothing on
// disk that a step (or anyone else) could replace between a check and the
// exec, and nothing to write or verify in the store. A step's PID 1 shows
// the memfd as /proc/1/exe; its seals refuse every write, so a command
// that opens it cannot turn the next step's init into its own program
// (runc's CVE-2019-5736 was a writable init binary).

// initFDMin is the lowest descriptor number the memfd is moved to: the
// fork of exec.Cmd dup2s the child's files onto 0 to len(files)-1 and moves
// clashing ones just above them, so a low number could be overwritten in
// the child before the exec that needs it.
const initFDMin = 100

var sandboxInit struct {
	once sync.Once
	path string // /proc/self/fd/N, "" to re-execute kiln
	desc string // for kiln version
	// broken is set when the kernel would not execute the memfd: later
	// steps re-execute kiln without trying again.
	broken atomic.Bool
}

// SandboxInit says which program runs as PID 1 of RUN steps: kiln-init
// (embedded by make build) or, when kiln was built without it or the
// host refuses to run it, kiln itself.
func SandboxInit() string {
	path, desc := initProgram()
	if bin := initbin.Binary(); path != "" && bin != nil {
		sum := sha256.Sum256(bin)
		desc = fmt.Sprintf("kiln-init (embedded, %d KiB, sha256:%s)", len(bin)>>10, hex.EncodeToString(sum[:6]))
	}
	return desc
}

// PrepareInit loads the sandbox init in the background, for a caller that
// knows RUN steps will run soon: the first one then finds it ready.
func PrepareInit() { go initProgram() }

// initProgram returns the path the RUN child is executed from ("" for
// kiln itself) and a description of it.
func initProgram() (path, desc string) {
	si := &sandboxInit
	si.once.Do(func() {
		si.path, si.desc = loadInit(initbin.Reader())
	})
	if si.broken.Load() {
		return "", "kiln itself (the kernel refused to execute the embedded kiln-init)"
	}
	return si.path, si.desc
}

// loadInit puts bin into a sealed memfd, kept open for the life of kiln.
// The description names kiln-init's digest only when asked for (kiln
// version): hashing 2.5 MB would be on the first step's path.
func loadInit(bin io.ReaderAt, size int64) (path, desc string) {
	if bin == nil {
		return "", "kiln itself (built without kiln-init: make build embeds it)"
	}
	what := "kiln-init"
	if err := checkELF(bin); err != nil {
		return "", "kiln itself (the embedded kiln-init is unusable: " + err.Error() + "; rebuild with make build)"
	}
	fd, err := sealedMemfd("kiln-init", io.NewSectionReader(bin, 0, size))
	if err != nil {
		return "", "kiln itself (" + err.Error() + ")"
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), what
}

// checkELF refuses a kiln-init built for another architecture than this
// kiln, which a cross-compile that skipped make could produce.
func checkELF(bin io.ReaderAt) error {
	f, err := elf.NewFile(bin)
	if err != nil {
		return fmt.Errorf("reading it as ELF: %w", err)
	}
	want := map[string]elf.Machine{
		"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM,
		"riscv64": elf.EM_RISCV, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "loong64": elf.EM_LOONGARCH,
	}[runtime.GOARCH]
	if want != 0 && f.Machine != want {
		return fmt.Errorf("built for %v, kiln for %s", f.Machine, runtime.GOARCH)
	}
	return nil
}

// sealedMemfd returns a close-on-exec descriptor, numbered initFDMin or
// above, of an executable memfd holding data and sealed against any change.
func sealedMemfd(name string, data io.Reader) (int, error) {
	flags := unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING
	// MFD_EXEC (Linux 6.3) says outright that it will be executed, which
	// a vm.memfd_noexec of 1 otherwise forbids; older kernels refuse the
	// unknown flag.
	fd, err := unix.MemfdCreate(name, flags|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, flags)
	}
	if err != nil {
		return -1, fmt.Errorf("creating a memfd for kiln-init: %w", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 256<<10)
	for {
		n, rerr := data.Read(buf)
		for rest := buf[:n]; len(rest) > 0; {
			w, err := unix.Write(fd, rest)
			if err != nil {
				return -1, fmt.Errorf("writing kiln-init to a memfd: %w", err)
			}
			rest = rest[w:]
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return -1, fmt.Errorf("writing kiln-init to a memfd: %w", rerr)
		}
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return -1, fmt.Errorf("sealing kiln-init's memfd: %w", err)
	}
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, initFDMin)
	if err != nil {
		return -1, fmt.Errorf("moving kiln-init's memfd: %w", err)
	}
	return high, nil
}

// initExecFailed records that the kernel would not execute kiln-init
// (err from starting it), when that is why: later steps, and this one's
// retry, re-execute kiln.
func initExecFailed(err error) bool {
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOEXEC) {
		sandboxInit.broken.Store(true)
		return true
	}
	return false
}
