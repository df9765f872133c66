package stepinit

import (
	"reflect"
	"strings"
	"testing"
)

func TestResolveUser(t *testing.T) {
	const passwd = `root:x:0:0:root:/root:/bin/sh
# a comment
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000::/home/app:/bin/sh
twin:x:1000:1001::/home/twin:/bin/sh
`
	const group = `root:x:0:
wheel:x:10:root,app
app:x:1000:
staff:x:50:app,nobody
nogroup:x:65534:
`
	tests := []struct {
		spec          string
		passwd, group string // "-" for a missing file
		want          identity
		err           string
	}{
		{spec: "", passwd: passwd, group: group, want: identity{0, 0, []uint32{0, 10}, "/root"}},
		{spec: "", passwd: "-", group: "-", want: identity{0, 0, []uint32{0}, "/"}},
		{spec: "root", passwd: passwd, group: group, want: identity{0, 0, []uint32{0, 10}, "/root"}},
		{spec: "app", passwd: passwd, group: group, want: identity{1000, 1000, []uint32{1000, 10, 50}, "/home/app"}},
		{spec: "1000", passwd: passwd, group: group, want: identity{1000, 1000, []uint32{1000, 10, 50}, "/home/app"}},
		{spec: "twin", passwd: passwd, group: group, want: identity{1000, 1001, []uint32{1001}, "/home/twin"}},
		{spec: "app:staff", passwd: passwd, group: group, want: identity{1000, 50, []uint32{50}, "/home/app"}},
		{spec: "app:4242", passwd: passwd, group: group, want: identity{1000, 4242, []uint32{4242}, "/home/app"}},
		{spec: "app:0:ignored", passwd: passwd, group: group, want: identity{1000, 0, []uint32{0}, "/home/app"}},
		// Both numeric: BuildKit's fast path, no groups from the file, but
		// runc still finds HOME by uid.
		{spec: "1000:50", passwd: passwd, group: group, want: identity{1000, 50, []uint32{50}, "/home/app"}},
		{spec: "root:root", passwd: passwd, group: group, want: identity{0, 0, []uint32{0}, "/root"}},
		{spec: "4242", passwd: passwd, group: group, want: identity{4242, 0, []uint32{0}, "/"}},
		{spec: "4242", passwd: "-", group: "-", want: identity{4242, 0, []uint32{0}, "/"}},
		{spec: "ghost", passwd: passwd, group: group, err: "unable to find user ghost: no matching entries in passwd file"},
		{spec: "ghost", passwd: "-", group: "-", err: "unable to find user ghost: no matching entries in passwd file"},
		{spec: "app:ghosts", passwd: passwd, group: group, err: "unable to find group ghosts: no matching entries in group file"},
		{spec: "99999999999", passwd: passwd, group: group, err: "parsing user"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			var p, g *strings.Reader
			if tt.passwd != "-" {
				p = strings.NewReader(tt.passwd)
			}
			if tt.group != "-" {
				g = strings.NewReader(tt.group)
			}
			got, err := resolveUser(tt.spec, readerOrNil(p), readerOrNil(g))
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// readerOrNil keeps a nil *strings.Reader from becoming a non-nil
// io.Reader.
func readerOrNil(r *strings.Reader) interface{ Read([]byte) (int, error) } {
	if r == nil {
		return nil
	}
	return r
}
