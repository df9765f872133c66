package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunFlags builds with --add-host, --shm-size and --ulimit: a RUN sees
// each, the image has no trace of the hosts entry, and a change of any of
// them runs the step again (BuildKit keeps them in the exec op's key).
func TestRunFlags(t *testing.T) {
	needRoot(t)
	reg := registryWithBases(t)
	root := t.TempDir()
	df := "FROM " + reg + "/library/busybox:latest\n" +
		"RUN (grep -E 'db|cache' /etc/hosts; df -k /dev/shm | tail -n 1 | awk '{print \"shm\", $2}'; " +
		"echo nofile $(ulimit -Sn) $(ulimit -Hn); echo date $(date +%s%N)) > /result\n"
	ctxDir := registryContext(t, df)

	build := func(t *testing.T, args ...string) (result, hosts string) {
		t.Helper()
		dest := filepath.Join(t.TempDir(), "rootfs")
		a := append([]string{"build", "--root", root, "--progress=plain", "-o", "type=local,dest=" + dest}, args...)
		out, code := kiln(t, append(a, ctxDir)...)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		r, err := os.ReadFile(filepath.Join(dest, "result"))
		if err != nil {
			t.Fatal(err)
		}
		h, _ := os.ReadFile(filepath.Join(dest, "etc", "hosts"))
		return string(r), string(h)
	}
	flags := []string{"--add-host", "db:10.1.2.3", "--add-host", "cache=fd00::5", "--shm-size", "96m", "--ulimit", "nofile=512:1024"}
	r1, hosts := build(t, flags...)
	for _, want := range []string{"10.1.2.3\tdb\n", "fd00::5\tcache\n", "shm 98304\n", "nofile 512 1024\n"} {
		if !strings.Contains(r1, want) {
			t.Errorf("RUN saw:\n%s\nwant a line %q", r1, want)
		}
	}
	if strings.Contains(hosts, "10.1.2.3") || strings.Contains(hosts, "db") {
		t.Errorf("the --add-host entry reached the image's /etc/hosts:\n%s", hosts)
	}
	if r, _ := build(t, flags...); r != r1 {
		t.Errorf("the same flags ran the step again:\n%s\nthen\n%s", r1, r)
	}
	def, _ := build(t)
	if !strings.Contains(def, "shm 65536\n") || strings.Contains(def, "10.1.2.3") {
		t.Errorf("without the flags RUN saw:\n%s\nwant a 64 MiB /dev/shm and no extra hosts", def)
	}
	for i, changed := range [][]string{
		{"--add-host", "db:10.1.2.4"},
		{"--shm-size", "32m"},
		{"--ulimit", "nofile=256"},
	} {
		r, _ := build(t, changed...)
		if r == def || r == r1 {
			t.Errorf("change %d (%v) did not run the step again:\n%s", i, changed, r)
		}
	}
}

// TestRunFlagsRefused: a bad value is refused before any work, naming
// the flag.
func TestRunFlagsRefused(t *testing.T) {
	ctxDir := registryContext(t, "FROM scratch\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--add-host", "db"}, "--add-host db: want HOST:IP"},
		{[]string{"--add-host", "db:not-an-ip"}, `--add-host db:not-an-ip: "not-an-ip" is not an IP address`},
		{[]string{"--add-host", "gw:host-gateway"}, "no gateway to the host"},
		{[]string{"--shm-size", "lots"}, "--shm-size lots: want a size"},
		{[]string{"--shm-size", "0"}, "--shm-size 0: want a positive size"},
		{[]string{"--ulimit", "nofile"}, "--ulimit nofile: want NAME=SOFT[:HARD]"},
		{[]string{"--ulimit", "files=10"}, `--ulimit files=10: unknown limit "files"`},
		{[]string{"--ulimit", "nofile=2048:1024"}, "above the hard limit"},
		{[]string{"--ulimit", "nproc=x"}, `soft limit "x"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"build", "--root", t.TempDir()}, tt.args...)
			out, code := kiln(t, append(args, ctxDir)...)
			if code != 2 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want 2 with %q:\n%s", code, tt.want, out)
			}
		})
	}
}
