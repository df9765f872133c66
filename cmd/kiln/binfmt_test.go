package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/emulate"
	"github.com/kiln-build/kiln/internal/testutil"
)

// fakeBinfmt points emulate at a binfmt_misc directory of the test's own
// making: nil entries means not mounted.
func fakeBinfmt(t *testing.T, entries map[string]string) {
	t.Helper()
	dir := t.TempDir()
	old := emulate.Dir
	emulate.Dir = dir
	t.Cleanup(func() { emulate.Dir = old })
	if entries == nil {
		return
	}
	entries["register"], entries["status"] = "", "enabled\n"
	for name, body := range entries {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const (
	aarch64F     = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n"
	riscv64NoFix = "enabled\ninterpreter /usr/bin/qemu-riscv64-static\nflags: \noffset 0\nmagic 7f454c460201010000000000000000000200f300\nmask ffffffffffffff00fffffffffffffffffeffffff\n"
	armDisabled  = "disabled\ninterpreter /usr/bin/qemu-arm-static\nflags: F\noffset 0\nmagic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n"
)

// TestPrintEmulation is what kiln binfmt (and kiln info) say on hosts in
// each state; the golden files are amd64's (the native platforms differ).
func TestPrintEmulation(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the golden files list amd64's native platforms")
	}
	tests := []struct {
		name    string
		entries map[string]string
	}{
		{"unmounted", nil},
		{"none", map[string]string{}},
		{"mixed", map[string]string{"qemu-aarch64": aarch64F, "qemu-riscv64": riscv64NoFix, "qemu-arm": armDisabled}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fakeBinfmt(t, tc.entries)
			var b bytes.Buffer
			printEmulation(&b, gatherEmulation())
			compareGolden(t, filepath.Join("testdata", "binfmt", tc.name+".golden"), b.String())
		})
	}
}

// TestBinfmtCmd runs kiln binfmt: listing needs nothing, --platform alone
// is a usage error, and --install names what to install when asked for a
// platform kiln has no emulator for.
func TestBinfmtCmd(t *testing.T) {
	fakeBinfmt(t, map[string]string{"qemu-aarch64": aarch64F})
	tests := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{args: nil, want: "linux/arm64 via /usr/libexec/qemu-binfmt/aarch64-binfmt-P: usable"},
		{args: []string{"--json"}, want: `"runnable": [`},
		{args: []string{"--platform", "arm64"}, wantErr: "add --install"},
		{args: []string{"--install", "--platform", "sparc64"}, wantErr: "no QEMU emulator for it"},
		{args: []string{"extra"}, wantErr: "takes no arguments"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := newBinfmtCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tc.args)
			err := cmd.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out.String())
			}
		})
	}
}

// TestEmulatedRun runs RUN steps of an arm64 base through the machine's
// QEMU handler: the F flag is what makes the emulator usable inside the
// sandbox's root, where no /usr/bin/qemu-* exists.
func TestEmulatedRun(t *testing.T) {
	needRoot(t)
	if err := emulate.Check("linux/arm64"); err != nil {
		testutil.SkipHost(t, err)
	}
	img, err := testutil.NewForeignBusyboxImage(context.Background(), "linux/arm64")
	var skip *testutil.SkipError
	if errors.As(err, &skip) {
		testutil.SkipHost(t, skip.Reason)
	}
	if err != nil {
		t.Fatal(err)
	}
	reg := testutil.Registry(t)
	ref := testutil.Push(t, img, reg+"/library/busybox:arm64")
	ctxDir := t.TempDir()
	df := "FROM " + ref + "\nRUN uname -m > /machine\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	log, code := kiln(t, "build", "--root", t.TempDir(), "--progress=plain", "-o", "type=local,dest="+rootfs, ctxDir)
	if code != 0 {
		t.Fatalf("kiln build exited %d:\n%s", code, log)
	}
	for file, want := range map[string]string{"machine": "aarch64"} {
		got, err := os.ReadFile(filepath.Join(rootfs, file))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("/%s = %q, want %q", file, got, want)
		}
	}
}
