package executor

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/initbin"
	"github.com/kiln-build/kiln/internal/testutil"
)

func TestLoadInit(t *testing.T) {
	tests := []struct {
		name     string
		bin      []byte
		wantPath bool
		wantDesc string
	}{
		{name: "built without kiln-init", bin: nil, wantDesc: "built without kiln-init"},
		{name: "not an executable", bin: []byte("#!/bin/sh\n"), wantDesc: "unusable"},
	}
	if bin := initbin.Binary(); bin != nil {
		r, size := initbin.Reader()
		got := make([]byte, size)
		if n, err := r.ReadAt(got, 0); n != len(bin) || (err != nil && err != io.EOF) || !bytes.Equal(got, bin) {
			t.Fatalf("initbin.Reader reads %d bytes (%v), unlike Binary's %d", n, err, len(bin))
		}
		tests = append(tests, struct {
			name     string
			bin      []byte
			wantPath bool
			wantDesc string
		}{name: "embedded", bin: bin, wantPath: true, wantDesc: "kiln-init"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.ReaderAt
			if tt.bin != nil {
				r = bytes.NewReader(tt.bin)
			}
			path, desc := loadInit(r, int64(len(tt.bin)))
			if (path != "") != tt.wantPath || !strings.Contains(desc, tt.wantDesc) {
				t.Errorf("loadInit = %q, %q; want a path: %v, a description with %q", path, desc, tt.wantPath, tt.wantDesc)
			}
		})
	}
}

// TestRunInitProgram runs a step with each sandbox init: the embedded
// kiln-init, executed from its sealed memfd, and kiln re-executed (the
// test binary here). A step cannot even look at PID 1's program (its
// capabilities are fewer than PID 1's); an insecure step, with all of
// them, can, and must still not be able to write it.
func TestRunInitProgram(t *testing.T) {
	needRoot(t)
	if initbin.Binary() == nil {
		testutil.SkipHost(t, "kiln-init is not embedded: make init (make test does) builds it before the tests")
	}
	base := busyboxRootfs(t)
	script := `readlink /proc/1/exe || echo hidden; tr '\0' ' ' < /proc/1/cmdline; echo; ` +
		`if echo x 2>/dev/null >> /proc/1/exe; then echo writable; else echo refused; fi`
	tests := []struct {
		name     string
		self     bool
		insecure bool
		wantExe  string // prefix of /proc/1/exe
		wantArgs string
	}{
		{name: "kiln-init", wantExe: "hidden", wantArgs: "kiln " + sandboxArg + " run "},
		{name: "kiln-init, insecure step", insecure: true, wantExe: "/memfd:kiln-init", wantArgs: "kiln " + sandboxArg + " run "},
		{name: "kiln re-executed", self: true, wantExe: "hidden", wantArgs: "kiln " + sandboxArg + " run "},
		{name: "kiln re-executed, insecure step", self: true, insecure: true, wantExe: "/", wantArgs: "kiln " + sandboxArg + " run "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			initProgram() // loaded before broken is set, as in a build
			sandboxInit.broken.Store(tt.self)
			defer sandboxInit.broken.Store(false)
			var out bytes.Buffer
			spec := RunSpec{
				Rootfs: newRootfs(t, base),
				Env:    []string{testPath},
				Args:   []string{"/bin/sh", "-c", script},
				Stdout: &out,
				Stderr: &out,
			}
			if tt.insecure {
				spec.Security = "insecure"
				spec.Sandbox.Allow = []string{EntitlementInsecure}
			}
			must(t, Run(context.Background(), spec))
			lines := strings.Split(out.String(), "\n")
			if len(lines) < 3 {
				t.Fatalf("output %q", out.String())
			}
			if !strings.HasPrefix(lines[0], tt.wantExe) || tt.self && strings.Contains(lines[0], "memfd") {
				t.Errorf("/proc/1/exe = %q, want %q…", lines[0], tt.wantExe)
			}
			if lines[1] != tt.wantArgs {
				t.Errorf("/proc/1/cmdline = %q, want %q", lines[1], tt.wantArgs)
			}
			if lines[2] != "refused" {
				t.Errorf("PID 1's program: %s, want refused", lines[2])
			}
		})
	}
}

// BenchmarkRunInit is a RUN step of /bin/true with each sandbox init:
// kiln-init, and the re-executed binary (here the test binary, which links
// less than kiln). --network=none: a step of its own network would set up
// user-mode networking each time.
func BenchmarkRunInit(b *testing.B) {
	needRoot(b)
	if initbin.Binary() == nil {
		testutil.SkipHost(b, "kiln-init is not embedded: make init builds it")
	}
	base := busyboxRootfs(b)
	for _, self := range []bool{false, true} {
		name := "kiln-init"
		if self {
			name = "self"
		}
		b.Run(name, func(b *testing.B) {
			initProgram()
			sandboxInit.broken.Store(self)
			defer sandboxInit.broken.Store(false)
			for b.Loop() {
				b.StopTimer()
				rootfs := newRootfs(b, base)
				b.StartTimer()
				if err := Run(context.Background(), RunSpec{Rootfs: rootfs, Env: []string{testPath}, Args: []string{"/bin/true"}, Network: NetworkNone}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInitStart is the start of the sandbox init alone: exec, the Go
// runtime and package initialisation, up to its first look at its spec
// (absent here, so it exits).
func BenchmarkInitStart(b *testing.B) {
	path, _ := initProgram()
	if path == "" {
		testutil.SkipHost(b, "kiln-init is not embedded: make init builds it")
	}
	for _, prog := range []struct{ name, path string }{{"kiln-init", path}, {"self", "/proc/self/exe"}} {
		b.Run(prog.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(prog.path, sandboxArg, "run")
				cmd.Env = []string{"GOMAXPROCS=" + strconv.Itoa(runtime.GOMAXPROCS(0)), "GODEBUG=containermaxprocs=0"}
				if err := cmd.Run(); err == nil {
					b.Fatal("the init ran without a spec")
				}
			}
		})
	}
}
