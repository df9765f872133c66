package export

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseAnnotationFlags(t *testing.T) {
	tests := []struct {
		in      string
		want    []Annotation
		wantErr string
	}{
		{in: "k=v", want: []Annotation{{Type: "manifest", Key: "k", Value: "v"}}},
		{in: "org.opencontainers.image.title=My App=1", want: []Annotation{{Type: "manifest", Key: "org.opencontainers.image.title", Value: "My App=1"}}},
		{in: "index:k=v", want: []Annotation{{Type: "index", Key: "k", Value: "v"}}},
		{in: "index,manifest:k=", want: []Annotation{{Type: "index", Key: "k"}, {Type: "manifest", Key: "k"}}},
		{in: "manifest[linux/amd64,linux/arm64/v8]:k=v", want: []Annotation{
			{Type: "manifest", Platform: "linux/amd64", Key: "k", Value: "v"},
			{Type: "manifest", Platform: "linux/arm64/v8", Key: "k", Value: "v"},
		}},
		{in: "manifest-descriptor:k=v", want: []Annotation{{Type: "manifest-descriptor", Key: "k", Value: "v"}}},
		{in: "index-descriptor:k=v", want: []Annotation{{Type: "index-descriptor", Key: "k", Value: "v"}}},
		{in: "k", wantErr: "want KEY=VALUE"},
		{in: "layer:k=v", wantErr: `unknown annotation type "layer"`},
		{in: "manifest[amd64]:k=v", wantErr: `platform "amd64"`},
		{in: "a b=v", wantErr: "want KEY=VALUE or TYPE[PLATFORM]:KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAnnotationFlags([]string{tt.in})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
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

func TestAnnotationAttrRoundTrip(t *testing.T) {
	for _, a := range []Annotation{
		{Type: "manifest", Key: "k", Value: "v"},
		{Type: "index-descriptor", Key: "org.example.x", Value: "v"},
		{Type: "manifest-descriptor", Platform: "linux/arm/v7", Key: "k", Value: ""},
	} {
		got, err := parseAnnotationAttr(a.AttrKey(), a.Value)
		if err != nil || got != a {
			t.Errorf("%s: got %+v, %v; want %+v", a.AttrKey(), got, err, a)
		}
	}
	if got, err := parseAnnotationAttr("annotation.k", "v"); err != nil || got.Type != "manifest" {
		t.Errorf("annotation.k: %+v, %v", got, err)
	}
}
