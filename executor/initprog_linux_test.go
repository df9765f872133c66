package executor

import (
	"bytes"
	"context"
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
		tests = append(tests, struct {
			name     string
			bin      []byte
			wantPath bool
			wantDesc string
		}{name: "embedded", bin: bin, wantPath: true, wantDesc: "kiln-init (embedded"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, desc := loadInit(tt.bin)
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
