package planner

import (
	"reflect"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{in: []string{"80"}, want: []string{"80/tcp"}},
		{in: []string{"53/UDP", "443/tcp"}, want: []string{"53/udp", "443/tcp"}},
		{in: []string{"8000-8002"}, want: []string{"8000/tcp", "8001/tcp", "8002/tcp"}},
		{in: []string{"127.0.0.1:8080:80"}, want: []string{"80/tcp"}},
		{in: []string{"x"}, wantErr: true},
		{in: []string{"70000"}, wantErr: true},
		{in: []string{"9-1"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parsePorts(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parsePorts(%q) error %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parsePorts(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCheckSignal(t *testing.T) {
	for s, ok := range map[string]bool{"SIGTERM": true, "term": true, "9": true, "SIGRTMIN+3": true, "SIGNOPE": false, "0": false, "99": false} {
		if err := checkSignal(s); (err == nil) != ok {
			t.Errorf("checkSignal(%q) = %v, want ok=%v", s, err, ok)
		}
	}
}

func TestPathRelativeToWorkingDir(t *testing.T) {
	tests := []struct{ wd, p, want string }{
		{"/", "x", "/x"},
		{"/w", ".", "/w/"},
		{"/w", "", "/w/"},
		{"/w", "sub/", "/w/sub/"},
		{"/w", "/abs", "/abs"},
		{"/w", "/abs/", "/abs/"},
		{"/w/a", "../b", "/w/b"},
	}
	for _, tt := range tests {
		got, err := pathRelativeToWorkingDir(tt.wd, tt.p)
		if err != nil || got != tt.want {
			t.Errorf("pathRelativeToWorkingDir(%q, %q) = %q, %v; want %q", tt.wd, tt.p, got, err, tt.want)
		}
	}
}

func TestRunCommandString(t *testing.T) {
	v := "1"
	args := []instructions.KeyValuePairOptional{{Key: "A", Value: &v}, {Key: "B"}, {Key: "A", Value: &v}}
	env := envList{"A=2", "PATH=/bin"}
	got := runCommandString([]string{"/bin/sh", "-c", "echo hi"}, args, env)
	want := "|2 A=2 B= /bin/sh -c echo hi"
	if got != want {
		t.Errorf("runCommandString = %q, want %q", got, want)
	}
}

// Keys frame every input: moving bytes between inputs changes the key.
func TestStepKeyFraming(t *testing.T) {
	key := func(pairs ...string) string {
		k := newStepKey("run", "parent")
		for i := 0; i < len(pairs); i += 2 {
			k.add(pairs[i], pairs[i+1])
		}
		return k.sum()
	}
	cases := [][]string{
		{"a", "bc"},
		{"ab", "c"},
		{"a", "b", "c", ""},
		{"a", "", "bc", ""},
	}
	seen := map[string]int{}
	for i, c := range cases {
		k := key(c...)
		if j, ok := seen[k]; ok {
			t.Errorf("inputs %q and %q give the same key", cases[j], c)
		}
		seen[k] = i
	}
	if key("a", "b") != key("a", "b") {
		t.Error("keys are not deterministic")
	}
	l1, l2 := newStepKey("run", ""), newStepKey("run", "")
	l1.addList("args", []string{"a b", "c"})
	l2.addList("args", []string{"a", "b c"})
	if l1.sum() == l2.sum() {
		t.Error("argument lists that join alike give the same key")
	}
}

func TestEnvList(t *testing.T) {
	e := envList{"A=1", "B=2"}
	e2 := e.Set("A", "3").Set("C", "4")
	if !reflect.DeepEqual(e2, envList{"A=3", "B=2", "C=4"}) {
		t.Errorf("set = %q", e2)
	}
	if !reflect.DeepEqual(e, envList{"A=1", "B=2"}) {
		t.Errorf("set changed its receiver: %q", e)
	}
	if v, ok := e2.Get("C"); !ok || v != "4" {
		t.Errorf("Get(C) = %q, %v", v, ok)
	}
}
