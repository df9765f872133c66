package source

import (
	"strings"
	"testing"
)

func TestParseGit(t *testing.T) {
	tests := []struct {
		src                 string
		ok                  bool
		wantErr             string
		remote, ref, subdir string
		checksum            string
		keep                *bool
	}{
		{src: "https://github.com/moby/buildkit.git", ok: true, remote: "https://github.com/moby/buildkit.git"},
		{src: "https://github.com/moby/buildkit.git#v0.10.1:docs/x/", ok: true, remote: "https://github.com/moby/buildkit.git", ref: "v0.10.1", subdir: "docs/x"},
		{src: "https://h/r.git#:../../sub", ok: true, remote: "https://h/r.git", subdir: "sub"},
		{src: "git@github.com:moby/buildkit.git#main", ok: true, remote: "git@github.com:moby/buildkit.git", ref: "main"},
		{src: "git://127.0.0.1:9418/repo#refs/tags/v1:a", ok: true, remote: "git://127.0.0.1:9418/repo", ref: "refs/tags/v1", subdir: "a"},
		{src: "ssh://git@h/r.git", ok: true, remote: "ssh://git@h/r.git"},
		{src: "https://h/r.git?tag=v1&subdir=d&checksum=abc", ok: true, remote: "https://h/r.git", ref: "refs/tags/v1", subdir: "d", checksum: "abc"},
		{src: "https://h/r.git?branch=main&keep-git-dir=true", ok: true, remote: "https://h/r.git", ref: "refs/heads/main", keep: ptr(true)},
		{src: "https://h/r.git?tag=a&branch=b", ok: true, wantErr: "branch conflicts with tag"},
		{src: "https://h/r.git#x?ref=y", ok: true, remote: "https://h/r.git", ref: "x?ref=y"},
		{src: "https://h/r.git?ref=a#b", ok: true, wantErr: "ref conflicts"},
		{src: "https://h/r.git?bogus=1", ok: true, wantErr: "unexpected query"},
		{src: "https://h/r.git#-uhoh", ok: true, wantErr: "cannot start with '-'"},
		{src: "https://example.com/file.tar.gz", ok: false},
		{src: "http://example.com/", ok: false},
		{src: "./local.git", ok: false},
		{src: "foo/bar", ok: false},
		{src: "file:///etc/x.git", ok: false},
		{src: "ext::sh -c touch% /tmp/pwned", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			g, ok, err := ParseGit(tt.src)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v (err %v)", ok, tt.ok, err)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				return
			}
			if g.Remote != tt.remote || g.Ref != tt.ref || g.Subdir != tt.subdir || g.Checksum != tt.checksum {
				t.Errorf("got %+v", *g)
			}
			if (g.KeepGitDir == nil) != (tt.keep == nil) || (g.KeepGitDir != nil && *g.KeepGitDir != *tt.keep) {
				t.Errorf("KeepGitDir = %v, want %v", g.KeepGitDir, tt.keep)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestIsHTTP(t *testing.T) {
	for src, want := range map[string]bool{
		"https://h/x.tar.gz": true,
		"http://h/":          true,
		"https://h/repo.git": false,
		"git@h:r.git":        false,
		"/local/https://x":   false,
		"HTTPS://h/x":        false, // as BuildKit: the prefix is case-sensitive
	} {
		if got := IsHTTP(src); got != want {
			t.Errorf("IsHTTP(%q) = %v, want %v", src, got, want)
		}
	}
}

func FuzzParseGit(f *testing.F) {
	for _, s := range []string{"https://h/r.git#v1:sub", "git@h:r.git?tag=x&subdir=../..", "git://h/r#:a/../../b", "ssh://u@h:22/r.git", "https://h/r.git?keep-git-dir"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		g, ok, err := ParseGit(src)
		if !ok || err != nil {
			return
		}
		// What reaches git and the copier: no option-looking remote or
		// ref, a subdir that stays inside the checkout.
		if strings.HasPrefix(g.Remote, "-") || strings.HasPrefix(g.Ref, "-") {
			t.Fatalf("%q: option-like remote or ref: %+v", src, *g)
		}
		if strings.HasPrefix(g.Subdir, "/") || g.Subdir == ".." || strings.HasPrefix(g.Subdir, "../") {
			t.Fatalf("%q: subdir %q leaves the checkout", src, g.Subdir)
		}
		if strings.ContainsAny(g.Remote, "#") {
			t.Fatalf("%q: fragment left in the remote %q", src, g.Remote)
		}
	})
}

func TestFileName(t *testing.T) {
	tests := []struct{ url, manual, cd, want string }{
		{url: "https://h/a/b.tar.gz", want: "b.tar.gz"},
		{url: "https://h/a/b.tar.gz?x=1#f", want: "b.tar.gz"},
		{url: "https://h/", want: "download"},
		{url: "https://h", want: "download"},
		{url: "https://h/x", manual: "m.bin", want: "m.bin"},
		{url: "https://h/x", cd: `attachment; filename="report.pdf"`, want: "report.pdf"},
		{url: "https://h/x", cd: `attachment; filename="../../etc/passwd"`, want: "passwd"},
		{url: "https://h/x", cd: `attachment; filename="..\\..\\win.ini"`, want: "win.ini"},
		{url: "https://h/x", cd: `attachment; filename="dir/"`, want: "x"},
		{url: "https://h/x", cd: `attachment; filename=".."`, want: "download"},
		{url: "https://h/x", cd: "attachment; filename=\"a\x01b\"", want: "download"},
		{url: "https://h/x", cd: `inline`, want: "x"},
		{url: "https://h/x", cd: `attachment; filename*=UTF-8''na%C3%AFve.txt`, want: "naïve.txt"},
		{url: "https://h/%2e%2e", want: "download"},
	}
	for _, tt := range tests {
		if got := FileName(tt.url, tt.manual, tt.cd); got != tt.want {
			t.Errorf("FileName(%q, %q, %q) = %q, want %q", tt.url, tt.manual, tt.cd, got, tt.want)
		}
	}
	if got := URLFileName("https://h/"); got != "__unnamed__" {
		t.Errorf("URLFileName of a bare host = %q", got)
	}
}

func FuzzFileName(f *testing.F) {
	f.Add("https://h/a.txt", `attachment; filename="../x"`)
	f.Add("https://h/", `attachment; filename*=UTF-8''%2e%2e%2f`)
	f.Fuzz(func(t *testing.T, u, cd string) {
		name := FileName(u, "", cd)
		// One path component, never a way out of the download directory.
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			t.Fatalf("FileName(%q, %q) = %q", u, cd, name)
		}
	})
}
