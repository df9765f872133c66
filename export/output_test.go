package export

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseOutputs(t *testing.T) {
	tests := []struct {
		spec    string
		want    Output
		wantErr string
	}{
		{spec: "type=oci,dest=out.tar", want: Output{Type: "oci", Dest: "out.tar", Tar: true}},
		{spec: "type=oci,dest=dir,tar=false", want: Output{Type: "oci", Dest: "dir"}},
		{spec: "type=oci,dest=out.tar,tar=true", want: Output{Type: "oci", Dest: "out.tar", Tar: true}},
		{spec: "type=docker,dest=x.tar", want: Output{Type: "docker", Dest: "x.tar", Tar: true}},
		{spec: "type=docker,dest=x.tar,name=a:1", want: Output{Type: "docker", Dest: "x.tar", Tar: true, Attrs: map[string]string{"name": "a:1"}}},
		{spec: `type=oci,dest=o.tar,"name=a:1,b:2"`, want: Output{Type: "oci", Dest: "o.tar", Tar: true, Attrs: map[string]string{"name": "a:1,b:2"}}},
		{spec: "type=local,dest=dir", want: Output{Type: "local", Dest: "dir"}},
		{spec: "type=tar,dest=x.tar", want: Output{Type: "tar", Dest: "x.tar", Tar: true}},
		{spec: "out/rootfs", want: Output{Type: "local", Dest: "out/rootfs"}},
		{spec: "dest=d,type=local", want: Output{Type: "local", Dest: "d"}},
		{spec: "TYPE=local,DEST=d", want: Output{Type: "local", Dest: "d"}},

		{spec: "-", want: Output{Type: "tar", Dest: "-", Tar: true}},
		{spec: "type=tar,dest=-", want: Output{Type: "tar", Dest: "-", Tar: true}},
		{spec: "type=tar", want: Output{Type: "tar", Dest: "-", Tar: true}},
		{spec: "type=oci,dest=-", want: Output{Type: "oci", Dest: "-", Tar: true}},
		{spec: "type=oci", want: Output{Type: "oci", Dest: "-", Tar: true}},
		{spec: "type=docker,dest=-", want: Output{Type: "docker", Dest: "-", Tar: true}},
		{spec: "type=docker", want: Output{Type: "docker", Tar: true}},
		{spec: "type=local,dest=-", want: Output{Type: "tar", Dest: "-", Tar: true}},
		{spec: "type=oci,dest=-,tar=false", wantErr: "cannot go to stdout"},
		{spec: "type=local", wantErr: "needs dest="},
		{spec: "", wantErr: "empty output"},
		{spec: "dest=x", wantErr: "missing type"},
		{spec: "type=zip,dest=x", wantErr: `unknown output type "zip"`},
		{spec: "type=registry", want: Output{Type: "registry"}},
		{spec: "type=image,name=x,push=true", want: Output{Type: "registry", Attrs: map[string]string{"name": "x", "push": "true"}}},
		{spec: "type=registry,oci-mediatypes=false", want: Output{Type: "registry", Attrs: map[string]string{"oci-mediatypes": "false"}}},
		{spec: "type=image,name=x", wantErr: "push=true"},
		{spec: "type=registry,push=false", wantErr: "do nothing"},
		{spec: "type=registry,dest=x", wantErr: "takes no dest"},
		{spec: "type=registry,tar=false", wantErr: `unknown key "tar"`},
		{spec: "type=registry,oci-mediatypes=maybe", wantErr: "not a boolean"},
		{spec: "type=registry,compression=lz4", wantErr: `compression="lz4": want gzip, zstd or uncompressed`},
		{spec: "type=oci,dest=x,compression=zstd,compression-level=30", wantErr: `compression-level=30 is out of range for zstd`},
		{spec: "type=oci,dest=x,compressions=zstd", wantErr: `unknown key "compressions" for type=oci`},
		{spec: "type=local,dest=x,name=y", wantErr: `unknown key "name" for type=local`},
		{spec: "type=docker,dest=x,tar=false", wantErr: `unknown key "tar" for type=docker`},
		{spec: "type=oci,dest=x,tar=flase", wantErr: "not a boolean"},
		{spec: "type=oci,dest=x,dest=y", wantErr: "given twice"},
		{spec: "type=oci,dest", wantErr: "not key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseOutputs([]string{tt.spec})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.spec) {
					t.Errorf("error %q does not quote the flag", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want.Attrs == nil {
				tt.want.Attrs = map[string]string{}
			}
			if !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("got %+v, want %+v", got[0], tt.want)
			}
		})
	}
}

func TestParseOutputsSeveral(t *testing.T) {
	got, err := ParseOutputs([]string{"type=oci,dest=a.tar", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Type != "oci" || got[1].Type != "local" {
		t.Fatalf("got %+v", got)
	}
	if _, err := ParseOutputs([]string{"type=oci,dest=a.tar", "type=nope,dest=x"}); err == nil {
		t.Fatal("a bad second flag was accepted")
	}
}
