package stepinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOverlayOptions(t *testing.T) {
	// 50 layers by digest: too long absolute, fine relative.
	var digests, abs []string
	for i := range 50 {
		d := strings.Repeat(string(rune('a'+i%26)), 63) + string(rune('0'+i/26))
		digests = append(digests, d)
		abs = append(abs, "/var/lib/kiln/layers/sha256/"+d)
	}
	tests := []struct {
		name      string
		stubs     string
		lowers    []string
		upper     string
		wantData  string
		wantDir   string
		wantError bool
	}{
		{
			name:     "read-write",
			lowers:   []string{"/l/2", "/l/1"},
			upper:    "/s/upper",
			wantData: "lowerdir=/l/2:/l/1,upperdir=/s/upper,workdir=/s/work," + overlayFixedOpts,
		},
		{
			name:     "read-only view",
			lowers:   []string{"/l/2", "/l/1"},
			wantData: "lowerdir=/l/2:/l/1," + overlayFixedOpts,
		},
		{
			name:     "separators escaped",
			lowers:   []string{"/l/a:b", "/l/c,d"},
			wantData: `lowerdir=/l/a\:b:/l/c\,d,` + overlayFixedOpts,
		},
		{
			name:     "too long for a page: relative to the common parent",
			lowers:   abs,
			upper:    "/s/upper",
			wantDir:  "/var/lib/kiln/layers/sha256",
			wantData: "lowerdir=" + strings.Join(digests, ":") + ",upperdir=/s/upper,workdir=/s/work," + overlayFixedOpts,
		},
		{
			name:     "our stub layer stays absolute",
			stubs:    "/tmp/step/stubs",
			lowers:   abs,
			upper:    "/s/upper",
			wantDir:  "/var/lib/kiln/layers/sha256",
			wantData: "lowerdir=/tmp/step/stubs:" + strings.Join(digests, ":") + ",upperdir=/s/upper,workdir=/s/work," + overlayFixedOpts,
		},
		{
			name:     "scratch",
			upper:    "/s/upper",
			wantData: "lowerdir=/e,upperdir=/s/upper,workdir=/s/work," + overlayFixedOpts,
		},
		{
			name:     "one-lower read-only view gets the empty dir below",
			lowers:   []string{"/l/1"},
			wantData: "lowerdir=/l/1:/e," + overlayFixedOpts,
		},
		{
			name:      "too long even relative",
			lowers:    []string{"/" + strings.Repeat("x", 2100), "/" + strings.Repeat("y", 2100)},
			upper:     "/s/upper",
			wantError: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := ""
			if tt.upper != "" {
				work = "/s/work"
			}
			o := Overlay{Stubs: tt.stubs, Lowers: tt.lowers, Empty: "/e", Upper: tt.upper, Work: work}
			data, dir, err := overlayOptions(o, 4095)
			if tt.wantError {
				if err == nil {
					t.Fatalf("no error for %d bytes of options", len(data))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if data != tt.wantData || dir != tt.wantDir {
				t.Errorf("got %.120q… in %q, want %.120q… in %q", data, dir, tt.wantData, tt.wantDir)
			}
			if len(data)+len(",volatile") > 4095 {
				t.Errorf("%d bytes do not fit a page with volatile", len(data))
			}
		})
	}
}

func TestCommonDir(t *testing.T) {
	tests := []struct {
		paths []string
		want  string
	}{
		{[]string{"/a/b/c"}, "/a/b"},
		{[]string{"/a/b/c", "/a/b/d"}, "/a/b"},
		{[]string{"/a/bc/x", "/a/b/y"}, "/a"},
		{[]string{"/a/b/c", "/x/y"}, "/"},
	}
	for _, tt := range tests {
		if got := commonDir(tt.paths); got != tt.want {
			t.Errorf("commonDir(%q) = %q, want %q", tt.paths, got, tt.want)
		}
	}
}

func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "real/dir"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/hosts"), nil, 0o644))
	links := map[string]string{
		"etc/resolv.conf": "../run/resolv.conf",
		"etc/escape":      "../../../../../../outside",
		"etc/absolute":    "/real/dir",
		"sym":             "real",
		"loop":            "loop",
	}
	for name, target := range links {
		must(t, os.Symlink(target, filepath.Join(root, name)))
	}
	tests := []struct {
		path    string
		rel     string
		exists  bool
		wantErr bool
	}{
		{path: "/etc/hosts", rel: "etc/hosts", exists: true},
		{path: "/etc/missing", rel: "etc/missing"},
		{path: "/etc/resolv.conf", rel: "run/resolv.conf"},
		{path: "/etc/escape", rel: "outside"},
		{path: "/etc/absolute/x", rel: "real/dir/x"},
		{path: "/sym/dir", rel: "real/dir", exists: true},
		{path: "/../../etc/hosts", rel: "etc/hosts", exists: true},
		{path: "/etc/hosts/below", rel: "etc/hosts/below"},
		{path: "/loop", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rel, exists, err := resolveInRoot(root, tt.path)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error, got %q", rel)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rel != tt.rel || exists != tt.exists {
				t.Errorf("got %q exists=%v, want %q exists=%v", rel, exists, tt.rel, tt.exists)
			}
		})
	}
	if rel, exists, err := resolveInRoot("", "/etc/../proc"); err != nil || exists || rel != "proc" {
		t.Errorf("empty root: %q %v %v", rel, exists, err)
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
