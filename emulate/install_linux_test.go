package emulate_test

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/emulate"
	"github.com/kiln-build/kiln/internal/testutil"
)

// TestEmulatorsAreDebians checks the built-in magic and mask against the
// files Debian's qemu-user-static ships for systemd-binfmt.
func TestEmulatorsAreDebians(t *testing.T) {
	re := regexp.MustCompile(`^:([^:]+):M::([^:]+):([^:]+):`)
	checked := 0
	for _, q := range emulate.Emulators {
		data, err := os.ReadFile(filepath.Join("/usr/lib/binfmt.d", "qemu-"+q.Arch+".conf"))
		if err != nil {
			continue // native here: Debian registers no handler for it
		}
		m := re.FindStringSubmatch(strings.TrimSpace(string(data)))
		if m == nil {
			t.Errorf("qemu-%s.conf: unexpected format %q", q.Arch, data)
			continue
		}
		if got := unescape(t, m[2]); got != q.Magic {
			t.Errorf("%s magic %s, Debian's %s", q.Arch, q.Magic, got)
		}
		if got := unescape(t, m[3]); got != q.Mask {
			t.Errorf("%s mask %s, Debian's %s", q.Arch, q.Mask, got)
		}
		checked++
	}
	if checked == 0 {
		testutil.SkipHost(t, "qemu-user-static is not installed (apt-get install qemu-user-static)")
	}
}

// unescape turns binfmt.d's \xHH and literal characters into hex.
func unescape(t *testing.T, s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			v, err := hex.DecodeString(s[i+2 : i+4])
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, v...)
			i += 3
			continue
		}
		b = append(b, s[i])
	}
	return hex.EncodeToString(b)
}

func TestSelect(t *testing.T) {
	tests := []struct {
		list    string
		want    string // arches, comma-separated
		wantErr string
	}{
		{list: "arm64", want: "aarch64"},
		{list: "linux/arm64,arm,riscv64", want: "aarch64,arm,riscv64"},
		{list: "linux/arm/v6,linux/arm/v7", want: "arm"},
		{list: "aarch64", want: "aarch64"},
		{list: "sparc64", wantErr: "no QEMU emulator for it"},
		{list: "amd64", wantErr: "runs natively"},
		{list: "", wantErr: "apt-get install qemu-user-static"},
	}
	for _, tc := range tests {
		t.Run(tc.list, func(t *testing.T) {
			if tc.wantErr == "runs natively" && !emulate.IsNative("linux/amd64") {
				t.Skip("amd64 is not native here")
			}
			qs, err := emulate.Select(strings.Split(tc.list, ","))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Select(%q) = %v, want error with %q", tc.list, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, q := range qs {
				got = append(got, q.Arch)
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("Select(%q) = %v, want %s", tc.list, got, tc.want)
			}
		})
	}
	all, err := emulate.Select([]string{"all"})
	if err != nil {
		testutil.SkipHost(t, err)
	}
	for _, q := range all {
		if emulate.IsNative(q.Platform) {
			t.Errorf("all includes native %s", q.Platform)
		}
	}
}

// TestInstall registers the s390x handler on this machine (an architecture
// no other test runs) in each state Install meets, and puts back what was
// there.
func TestInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipHost(t, "registering binfmt_misc handlers needs root")
	}
	qs, err := emulate.Select([]string{"s390x"})
	if err != nil {
		t.Fatal(err)
	}
	q := qs[0]
	interp, _ := q.Interpreter()
	if interp == "" {
		testutil.SkipHost(t, "qemu-s390x-static is missing: apt-get install qemu-user-static")
	}
	const name, other = "qemu-s390x", "kiln-test-s390x"
	if _, err := emulate.Install(nil); err != nil { // mounts binfmt_misc
		t.Fatal(err)
	}
	before, err := emulate.ReadEntry(name)
	had := err == nil
	t.Cleanup(func() {
		for _, n := range []string{name, other} {
			if _, err := os.Stat(filepath.Join(emulate.Dir, n)); err == nil {
				if err := emulate.Remove(n); err != nil {
					t.Error(err)
				}
			}
		}
		if had {
			if err := emulate.Register(before); err != nil {
				t.Errorf("restoring %s: %v", name, err)
			}
		}
	})
	remove := func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(emulate.Dir, name)); err == nil {
			if err := emulate.Remove(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	noFix := emulate.Entry{Name: name, Enabled: true, Magic: q.Magic, Mask: q.Mask, Interpreter: interp, Offset: "0"}
	tests := []struct {
		name  string
		setup func(t *testing.T)
		did   string
	}{
		{"absent", remove, "registered"},
		{"again", func(t *testing.T) {}, "kept"},
		{"without F", func(t *testing.T) {
			remove(t)
			if err := emulate.Register(noFix); err != nil {
				t.Fatal(err)
			}
			if err := emulate.Check(q.Platform); err == nil || !strings.Contains(err.Error(), "F (fix binary)") {
				t.Fatalf("Check with a handler without F = %v", err)
			}
		}, "replaced"},
		{"disabled", func(t *testing.T) {
			if err := emulate.Disable(name); err != nil {
				t.Fatal(err)
			}
			if err := emulate.Check(q.Platform); err == nil || !strings.Contains(err.Error(), "disabled") {
				t.Fatalf("Check with a disabled handler = %v", err)
			}
		}, "replaced"},
		{"other name without F", func(t *testing.T) {
			remove(t)
			e := noFix
			e.Name = other
			if err := emulate.Register(e); err != nil {
				t.Fatal(err)
			}
		}, "replaced"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup(t)
			done, err := emulate.Install(qs)
			if err != nil {
				t.Fatal(err)
			}
			if len(done) != 1 || done[0].Did != tc.did || done[0].Name != name {
				t.Fatalf("Install = %+v, want %s %s", done, name, tc.did)
			}
			e, err := emulate.ReadEntry(name)
			if err != nil {
				t.Fatal(err)
			}
			if !e.Enabled || !strings.Contains(e.Flags, "F") || e.Magic != q.Magic || e.Mask != q.Mask || e.Interpreter != interp {
				t.Errorf("entry after Install: %+v", e)
			}
			if _, err := os.Stat(filepath.Join(emulate.Dir, other)); err == nil {
				t.Errorf("%s without F is still registered", other)
			}
			if err := emulate.Check(q.Platform); err != nil {
				t.Errorf("Check(%s) after Install: %v", q.Platform, err)
			}
			hs, err := emulate.Handlers()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, h := range hs {
				found = found || h.Name == name && h.Usable()
			}
			if !found {
				t.Errorf("Handlers() = %+v lacks a usable %s", hs, name)
			}
		})
	}

	// A usable entry of another name is kept; ours without F, which the
	// kernel would try first, goes.
	t.Run("other name usable", func(t *testing.T) {
		remove(t)
		e := noFix
		e.Name, e.Flags = other, "F"
		if err := emulate.Register(e); err != nil {
			t.Fatal(err)
		}
		if err := emulate.Register(noFix); err != nil {
			t.Fatal(err)
		}
		done, err := emulate.Install(qs)
		if err != nil {
			t.Fatal(err)
		}
		if len(done) != 1 || done[0].Did != "kept" || done[0].Name != other {
			t.Fatalf("Install = %+v, want %s kept", done, other)
		}
		if _, err := os.Stat(filepath.Join(emulate.Dir, name)); err == nil {
			t.Errorf("%s without F is still registered", name)
		}
		if err := emulate.Check(q.Platform); err != nil {
			t.Errorf("Check(%s): %v", q.Platform, err)
		}
	})
}
