package export

import (
	"strings"
	"testing"
)

func TestRewriteTimestampOption(t *testing.T) {
	tests := []struct {
		spec    string
		on, set bool
		wantErr string
	}{
		{spec: "type=oci,dest=x.tar"},
		{spec: "type=oci,dest=x.tar,rewrite-timestamp=true", on: true, set: true},
		{spec: "type=oci,dest=d,tar=false,rewrite-timestamp=false", set: true},
		{spec: "type=docker,dest=x.tar,rewrite-timestamp=1", on: true, set: true},
		{spec: "type=registry,rewrite-timestamp=false", set: true},
		{spec: "type=image,name=r/x,push=true,rewrite-timestamp=true", on: true, set: true},
		{spec: "type=oci,dest=x.tar,rewrite-timestamp=yes", wantErr: `rewrite-timestamp="yes" is not a boolean`},
		{spec: "type=registry,rewrite-timestamp=", wantErr: "not a boolean"},
		{spec: "type=local,dest=d,rewrite-timestamp=true", wantErr: `unknown key "rewrite-timestamp" for type=local`},
		{spec: "type=tar,dest=x.tar,rewrite-timestamp=true", wantErr: `unknown key "rewrite-timestamp" for type=tar`},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			outs, err := ParseOutputs([]string{tc.spec})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			on, set, err := RewriteTimestamp(outs[0])
			if err != nil || on != tc.on || set != tc.set {
				t.Fatalf("RewriteTimestamp = %v, %v, %v; want %v, %v, nil", on, set, err, tc.on, tc.set)
			}
		})
	}
}
