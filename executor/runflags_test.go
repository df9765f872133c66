package executor

import (
	"strings"
	"testing"
)

func TestParseHostIP(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "db:10.0.0.5", want: "db:10.0.0.5"},
		{in: "db=10.0.0.5", want: "db:10.0.0.5"},
		{in: "v6:fd00::1", want: "v6:fd00::1"},
		{in: "v6:[fd00::1]", want: "v6:fd00::1"},
		{in: "mapped:::ffff:10.0.0.1", want: "mapped:10.0.0.1"},
		{in: "db", wantErr: "want HOST:IP"},
		{in: ":10.0.0.1", wantErr: "want HOST:IP"},
		{in: "db:", wantErr: "want HOST:IP"},
		{in: "db:example.com", wantErr: "is not an IP address"},
		{in: "a#b:10.0.0.1", wantErr: "white space or #"},
		{in: "gw:host-gateway", wantErr: "no gateway to the host"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseHostIP(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Errorf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestParseUlimit(t *testing.T) {
	tests := []struct {
		in      string
		want    Ulimit
		wantErr string
	}{
		{in: "nofile=1024", want: Ulimit{Name: "nofile", Soft: 1024, Hard: 1024}},
		{in: "nofile=1024:2048", want: Ulimit{Name: "nofile", Soft: 1024, Hard: 2048}},
		{in: "core=-1", want: Ulimit{Name: "core", Soft: -1, Hard: -1}},
		{in: "nproc=10:-1", want: Ulimit{Name: "nproc", Soft: 10, Hard: -1}},
		{in: "nofile", wantErr: "want NAME=SOFT[:HARD]"},
		{in: "as=1", wantErr: `unknown limit "as"`},
		{in: "nofile=x", wantErr: `soft limit "x"`},
		{in: "nofile=1:y", wantErr: `hard limit "y"`},
		{in: "nofile=-2", wantErr: "soft limit"},
		{in: "nofile=2:1", wantErr: "above the hard limit"},
		{in: "nofile=-1:10", wantErr: "above the hard limit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseUlimit(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestRunFlagsKey(t *testing.T) {
	if k := (Sandbox{}).RunFlagsKey(); k != "" {
		t.Errorf("no flags give key %q: the keys of builds without them would change", k)
	}
	a := Sandbox{Ulimits: []Ulimit{{Name: "nofile", Soft: 1, Hard: 2}}}
	b := Sandbox{Ulimits: []Ulimit{{Name: "nofile", Soft: 1, Hard: 3}}}
	c := Sandbox{ShmSize: 1 << 20}
	if a.RunFlagsKey() == b.RunFlagsKey() || a.RunFlagsKey() == c.RunFlagsKey() {
		t.Error("different flags give the same key")
	}
}
