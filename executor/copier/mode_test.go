package copier

import (
	"io/fs"
	"testing"
)

// The expectations of the symbolic cases were produced by
// tonistiigi/dchapes-mode (what BuildKit applies) with umask 0.
func TestChmodApply(t *testing.T) {
	cases := []struct {
		spec  string
		src   uint32 // chmod(1) bits of the source
		isDir bool
		want  uint32
	}{
		{"640", 0o755, false, 0o640},
		{"640", 0o755, true, 0o640},
		{"4755", 0o644, false, 0o4755},
		{"01777", 0o755, true, 0o1777},
		{"u=rwX,go=rX", 0o600, false, 0o644},
		{"u=rwX,go=rX", 0o700, true, 0o755},
		{"go-w", 0o777, false, 0o755},
		{"=rw,+X", 0o755, false, 0o777},
		{"=rw,+X", 0o644, false, 0o666},
		{"+X", 0o600, true, 0o711},
		{"u=rwx,go=u-w", 0, false, 0o755},
		{"go=u-w", 0o751, false, 0o755},
		{"o+s", 0o755, false, 0o755},
		{"+t", 0o755, false, 0o1755},
		{"=rwt", 0o640, false, 0o1640},
		{"u+s,g+s", 0o755, false, 0o6755},
		{"a-x", 0o4755, false, 0o4644},
		{"u=g", 0o070, false, 0o770},
		{"ug=rw,o=", 0o1777, false, 0o1660},
		{"=", 0o5777, false, 0o1000},
	}
	for _, tc := range cases {
		c, err := parseChmod(tc.spec)
		if err != nil {
			t.Errorf("parseChmod(%q): %v", tc.spec, err)
			continue
		}
		if got := c.apply(fromBits(tc.src, tc.isDir)); got != tc.want {
			t.Errorf("%q on %04o (dir %v) = %04o, want %04o", tc.spec, tc.src, tc.isDir, got, tc.want)
		}
	}
}

// fromBits builds the Go file mode of chmod(1) bits.
func fromBits(b uint32, dir bool) fs.FileMode {
	m := fs.FileMode(b & 0o777)
	if b&bitSetuid != 0 {
		m |= fs.ModeSetuid
	}
	if b&bitSetgid != 0 {
		m |= fs.ModeSetgid
	}
	if b&bitSticky != 0 {
		m |= fs.ModeSticky
	}
	if dir {
		m |= fs.ModeDir
	}
	return m
}

func TestParseChmod(t *testing.T) {
	cases := []struct {
		spec       string
		wantErr    string
		parentPerm uint32
	}{
		{spec: "", parentPerm: 0o755},
		{spec: "0640", parentPerm: 0o640},
		{spec: "4755", parentPerm: 0o755},
		{spec: "7777", parentPerm: 0o777},
		{spec: "u+x", parentPerm: 0o755},
		{spec: "10000", wantErr: "invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777"},
		{spec: "999", wantErr: "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777"},
		{spec: "u+z", wantErr: `invalid chmod parameter "u+z": invalid syntax`},
		{spec: "u", wantErr: `invalid chmod parameter "u": invalid syntax`},
		{spec: "u+r,", wantErr: `invalid chmod parameter "u+r,": invalid syntax`},
	}
	for _, tc := range cases {
		c, err := parseChmod(tc.spec)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("parseChmod(%q) error %v, want %q", tc.spec, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseChmod(%q): %v", tc.spec, err)
			continue
		}
		if got := c.parentPerm(); got != tc.parentPerm {
			t.Errorf("parseChmod(%q).parentPerm() = %04o, want %04o", tc.spec, got, tc.parentPerm)
		}
	}
}
