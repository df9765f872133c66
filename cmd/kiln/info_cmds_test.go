package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
)

// TestDetectHost reads fake /proc and /sys trees of the kinds of host
// kiln meets; testdata/info/HOST.golden is what `kiln version` says.
func TestDetectHost(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name string
		fs   fstest.MapFS
	}{
		{"cgroup2", fstest.MapFS{
			"proc/sys/kernel/osrelease":                 file("6.1.0-28-amd64\n"),
			"proc/filesystems":                          file("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n"),
			"proc/self/mounts":                          file("sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"),
			"sys/fs/cgroup/cgroup.controllers":          file("cpuset cpu io memory pids\n"),
			"proc/sys/user/max_user_namespaces":         file("63498\n"),
			"proc/sys/kernel/unprivileged_userns_clone": file("1\n"),
			"proc/self/status":                          file("Name:\tkiln\nSeccomp:\t0\nSeccomp_filters:\t0\n"),
		}},
		{"hybrid-in-container", fstest.MapFS{
			"proc/sys/kernel/osrelease": file("5.15.0\n"),
			"proc/filesystems":          file("nodev\tsysfs\n\text4\n"),
			"proc/self/mounts": file("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n" +
				"cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n" +
				"cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n" +
				"cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n" +
				"cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"),
			"proc/sys/user/max_user_namespaces":                     file("63498\n"),
			"proc/sys/kernel/apparmor_restrict_unprivileged_userns": file("1\n"),
			"proc/self/status":                                      file("Seccomp:\t2\n"),
		}},
		{"bare", fstest.MapFS{
			"proc/sys/user/max_user_namespaces": file("0\n"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := detectHost(tt.fs)
			h.Root = true // the test's own uid is not the point
			var b bytes.Buffer
			table(&b, h.rows())
			compareGolden(t, filepath.Join("testdata", "info", tt.name+".golden"), b.String())
		})
	}
}

// TestPrintInfo prints a store and registry settings.
func TestPrintInfo(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kiln.toml")
	err := os.WriteFile(cfg, []byte(`[registry."docker.io"]
mirrors = ["mirror.gcr.io"]
[registry."registry.local:5000"]
http = true
insecure = true
ca = ["/etc/kiln/ca.pem"]
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KILN_CONFIG", cfg)
	fakeBinfmt(t, map[string]string{"qemu-aarch64": aarch64F})
	if runtime.GOARCH != "amd64" {
		t.Skip("the golden file lists amd64's native platforms")
	}
	// a directory that exists but holds no store is left alone
	r, err := gatherInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs")); err == nil {
		t.Error("kiln info created a store")
	}
	var b bytes.Buffer
	printInfo(&b, r)
	got := strings.ReplaceAll(b.String(), dir, "DIR")
	compareGolden(t, filepath.Join("testdata", "info", "info.golden"), got)
	if r.Registries["docker.io"].Mirrors[0] != "mirror.gcr.io" {
		t.Errorf("registries %+v", r.Registries)
	}
}

// TestCompletion checks each shell's script and refuses others with exit 2.
func TestCompletion(t *testing.T) {
	for _, sh := range shells {
		out, code := kiln(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "kiln") {
			t.Errorf("completion %s: exit %d, %d bytes", sh, code, len(out))
		}
	}
	if out, code := kiln(t, "completion", "powershell"); code != exitUsage {
		t.Errorf("completion powershell: exit %d, want %d:\n%s", code, exitUsage, out)
	}
	out, code := kiln(t, "version")
	if code != 0 || !strings.Contains(out, "Go version:") || !strings.Contains(out, "Overlayfs:") {
		t.Errorf("version: exit %d:\n%s", code, out)
	}
}

// compareGolden compares got with file, or rewrites file with -update.
func compareGolden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it):\n--- want\n%s--- got\n%s", file, want, got)
	}
}
