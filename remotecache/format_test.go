package remotecache

import (
	"bytes"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/cache"
)

func hash(c byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)}
}

func entries() []Entry {
	t := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	layer := cache.LayerInfo{DiffID: hash('a'), Digest: hash('b'), Size: 42, MediaType: types.OCILayer}
	return []Entry{
		{Key: strings.Repeat("2", 64), Record: cache.StepRecord{DiffID: hash('a'), Created: t}, Layer: layer},
		{Key: strings.Repeat("1", 64), Record: cache.StepRecord{Empty: true, Created: t}},
	}
}

// The same records in any order give the same bytes; decoding gives them
// back.
func TestRecordsCanonical(t *testing.T) {
	e := entries()
	a, layers, err := encodeRecords(e, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := encodeRecords([]Entry{e[1], e[0], e[0]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("order changed the bytes:\n%s\n%s", a, b)
	}
	if len(layers) != 1 || layers[0].Digest != hash('b') {
		t.Fatalf("layers %v", layers)
	}
	got, err := decodeRecords(a)
	if err != nil {
		t.Fatal(err)
	}
	r := got[e[0].Key]
	if r.rec.DiffID != hash('a') || r.digest != hash('b') || r.size != 42 || !r.rec.Created.Equal(e[0].Record.Created) {
		t.Errorf("decoded %+v", r)
	}
	if !got[e[1].Key].rec.Empty {
		t.Errorf("empty record decoded as %+v", got[e[1].Key])
	}
}

func TestRecordsRefused(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"not json", "{"},
		{"no list", "{}"},
		{"no key", `{"records":[{"empty":true}]}`},
		{"bad digest", `{"records":[{"key":"k","diffID":"sha256:` + strings.Repeat("a", 64) + `","digest":"sha256:../../x","size":1}]}`},
		{"no size", `{"records":[{"key":"k","diffID":"sha256:` + strings.Repeat("a", 64) + `","digest":"sha256:` + strings.Repeat("b", 64) + `"}]}`},
		{"bad time", `{"records":[{"key":"k","empty":true,"created":"yesterday"}]}`},
	} {
		if _, err := decodeRecords([]byte(tc.data)); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestInlineConfig(t *testing.T) {
	out, err := InlineConfig([]byte(`{"architecture":"amd64"}`), entries())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, []byte(`{"architecture":"amd64","`+InlineKey+`":{"records":[`)) {
		t.Errorf("got %s", out)
	}
}
