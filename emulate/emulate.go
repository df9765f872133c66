// Package emulate tells which platforms a RUN step can execute on this
// machine: the native ones, plus every foreign architecture for which the
// kernel has a binfmt_misc handler (QEMU user-mode emulation) registered with
// the F ("fix binary") flag. Without F the kernel opens the interpreter at
// exec time inside the sandbox's mount namespace, where it does not exist, so
// such a handler is listed as unusable rather than silently failing later.
package emulate

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/containerd/platforms"
)

// Dir is where binfmt_misc is mounted.
var Dir = "/proc/sys/fs/binfmt_misc"

// Handler is one registered binfmt_misc entry that runs ELF binaries of a
// foreign architecture.
type Handler struct {
	Name        string   // entry name, e.g. qemu-aarch64
	Interpreter string   // path the kernel runs
	Platforms   []string // normalized platforms it runs, e.g. linux/arm64
	Enabled     bool
	Fix         bool // F flag: interpreter opened at registration
}

// Usable reports whether a sandboxed RUN can use the handler.
func (h Handler) Usable() bool { return h.Enabled && h.Fix }

// Native returns the platforms this machine runs without emulation.
func Native() []string {
	switch runtime.GOARCH {
	case "amd64":
		return []string{"linux/amd64", "linux/386"}
	case "arm64":
		return []string{"linux/arm64", "linux/arm/v7", "linux/arm/v6"}
	}
	return []string{platforms.Format(platforms.DefaultSpec())}
}

// Handlers lists the binfmt_misc entries that run foreign ELF binaries. A
// machine without binfmt_misc mounted has none.
func Handlers() ([]Handler, error) {
	ents, err := os.ReadDir(Dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: %w", Dir, err)
	}
	var hs []Handler
	for _, e := range ents {
		if e.Name() == "register" || e.Name() == "status" {
			continue
		}
		h, ok := readHandler(filepath.Join(Dir, e.Name()))
		if ok {
			hs = append(hs, h)
		}
	}
	return hs, nil
}

func readHandler(path string) (Handler, bool) {
	f, err := os.Open(path)
	if err != nil {
		return Handler{}, false
	}
	defer f.Close()
	h := Handler{Name: filepath.Base(path)}
	var magic, mask []byte
	offset := "0"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "enabled":
			h.Enabled = true
		case "interpreter":
			h.Interpreter = v
		case "flags:":
			h.Fix = strings.Contains(v, "F")
		case "offset":
			offset = v
		case "magic":
			magic, _ = hex.DecodeString(v)
		case "mask":
			mask, _ = hex.DecodeString(v)
		}
	}
	if offset != "0" || len(magic) < 20 {
		return Handler{}, false
	}
	if len(mask) != len(magic) {
		mask = make([]byte, len(magic))
		for i := range mask {
			mask[i] = 0xff
		}
	}
	p := elfPlatforms(magic, mask)
	if p == nil {
		return Handler{}, false
	}
	h.Platforms = p
	return h, true
}

// elfPlatforms maps an ELF header magic (class, data order, e_machine) to the
// OCI platforms it matches.
func elfPlatforms(magic, mask []byte) []string {
	if string(magic[:4]) != "\x7fELF" {
		return nil
	}
	class, data := magic[4]&mask[4], magic[5]&mask[5]
	var machine uint16
	if data == 2 { // big endian
		machine = uint16(magic[18]&mask[18])<<8 | uint16(magic[19]&mask[19])
	} else {
		machine = uint16(magic[19]&mask[19])<<8 | uint16(magic[18]&mask[18])
	}
	type key struct {
		class, data byte
		machine     uint16
	}
	known := map[key][]string{
		{2, 1, 0xb7}:  {"linux/arm64"},
		{1, 1, 0x28}:  {"linux/arm/v7", "linux/arm/v6", "linux/arm/v5"},
		{2, 1, 0xf3}:  {"linux/riscv64"},
		{2, 1, 0x15}:  {"linux/ppc64le"},
		{2, 2, 0x16}:  {"linux/s390x"},
		{2, 1, 0x3e}:  {"linux/amd64"},
		{1, 1, 0x03}:  {"linux/386"},
		{2, 1, 0x08}:  {"linux/mips64le"},
		{2, 2, 0x08}:  {"linux/mips64"},
		{2, 1, 0x102}: {"linux/loong64"},
	}
	return known[key{class, data, machine}]
}

// Runnable returns every platform a RUN step can execute here, sorted: the
// native ones and those of usable handlers.
func Runnable() ([]string, error) {
	hs, err := Handlers()
	seen := map[string]bool{}
	for _, p := range Native() {
		seen[p] = true
	}
	for _, h := range hs {
		if h.Usable() {
			for _, p := range h.Platforms {
				seen[p] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, err
}

// IsNative reports whether platform p runs without emulation.
func IsNative(p string) bool {
	n, err := platforms.Parse(p)
	if err != nil {
		return false
	}
	want := platforms.Format(platforms.Normalize(n))
	for _, q := range Native() {
		if q == want {
			return true
		}
	}
	return false
}

// Check returns nil when a RUN for platform p can execute here, and otherwise
// an error that says which command installs a handler.
func Check(p string) error {
	n, err := platforms.Parse(p)
	if err != nil {
		return fmt.Errorf("platform %q: %w", p, err)
	}
	want := platforms.Format(platforms.Normalize(n))
	if IsNative(want) {
		return nil
	}
	hs, err := Handlers()
	if err != nil {
		return err
	}
	for _, h := range hs {
		for _, q := range h.Platforms {
			if q != want && !(strings.HasPrefix(want, "linux/arm/") && q == "linux/arm/v7") {
				continue
			}
			if h.Usable() {
				return nil
			}
			if !h.Enabled {
				return fmt.Errorf("cannot run %s binaries: the binfmt_misc handler %s is disabled; run `kiln binfmt --install` as root", want, h.Name)
			}
			return fmt.Errorf("cannot run %s binaries: the binfmt_misc handler %s lacks the F (fix binary) flag, so its interpreter is not visible in the sandbox; run `kiln binfmt --install` as root to register it again", want, h.Name)
		}
	}
	return fmt.Errorf("cannot run %s binaries on this %s machine: no QEMU handler is registered; run `apt-get install qemu-user-static && kiln binfmt --install` as root", want, runtime.GOARCH)
}
