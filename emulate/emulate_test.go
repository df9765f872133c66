package emulate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHandlersAndCheck(t *testing.T) {
	dir := t.TempDir()
	old := Dir
	Dir = dir
	t.Cleanup(func() { Dir = old })
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("register", "")
	write("status", "enabled\n")
	write("qemu-aarch64", "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")
	write("qemu-riscv64", "enabled\ninterpreter /usr/bin/qemu-riscv64-static\nflags: \noffset 0\nmagic 7f454c460201010000000000000000000200f300\nmask ffffffffffffff00fffffffffffffffffeffffff\n")
	write("python3.11", "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n")
	hs, err := Handlers()
	if err != nil || len(hs) != 2 {
		t.Fatalf("Handlers = %v, %v; want 2 ELF handlers", hs, err)
	}
	tests := []struct {
		platform, wantErr string
	}{
		{"linux/arm64", ""},
		{"linux/arm64/v8", ""},
		{"linux/riscv64", "F (fix binary)"},
		{"linux/s390x", "no QEMU handler"},
	}
	for _, tc := range tests {
		err := Check(tc.platform)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("Check(%s) = %v, want %q", tc.platform, err, tc.wantErr)
		}
	}
	ps, _ := Runnable()
	if !strings.Contains(strings.Join(ps, ","), "linux/arm64") {
		t.Errorf("Runnable = %v, want linux/arm64", ps)
	}
}
