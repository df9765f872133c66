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

// Cache mounts: sorted by id whatever the order given, their layers kept
// in order and named in the manifest's layers; no mounts, no "mounts" key
// (a cache without them keeps its old bytes); a malformed mounts section
// is refused apart from the records.
func TestMountsCanonical(t *testing.T) {
	tm := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l := func(c byte) cache.LayerInfo {
		return cache.LayerInfo{DiffID: hash(c), Digest: hash(c + 1), Size: 7, MediaType: types.OCILayer}
	}
	ms := []Mount{{ID: "z/go", Layers: []cache.LayerInfo{l('c'), l('e')}, Created: tm}, {ID: "apt", Layers: []cache.LayerInfo{l('7')}}}
	a, layers, err := encodeRecords(entries(), ms)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := encodeRecords(entries(), []Mount{ms[1], ms[0]})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("order changed the bytes:\n%s\n%s", a, b)
	}
	if len(layers) != 4 {
		t.Errorf("the manifest names %d layers, want the step's and the mounts' 3", len(layers))
	}
	plain, _, _ := encodeRecords(entries(), nil)
	if bytes.Contains(plain, []byte("mounts")) {
		t.Errorf("records without mounts mention them: %s", plain)
	}
	got, err := decodeMounts(a)
	if err != nil {
		t.Fatal(err)
	}
	if g := got["z/go"]; len(g.layers) != 2 || g.layers[0].digest != hash('d') || g.layers[1].diffID != hash('e') || !g.created.Equal(tm) {
		t.Errorf("decoded %+v", g)
	}
	if _, err := decodeRecords(a); err != nil {
		t.Errorf("records with mounts: %v", err)
	}

	bad := `{"records":[],"mounts":[{"id":"x","layers":[{"diffID":"sha256:` + strings.Repeat("a", 64) + `","digest":"sha256:nope","size":3}]}]}`
	if _, err := decodeMounts([]byte(bad)); err == nil {
		t.Error("a mount layer with a bad digest was accepted")
	}
	if _, err := decodeRecords([]byte(bad)); err != nil {
		t.Errorf("the records beside bad mounts were refused: %v", err)
	}
	for _, tc := range []string{`{"mounts":[{"id":"","layers":[]}]}`, `{"mounts":[{"id":"x","layers":[]}]}`, `{"mounts":{}}`} {
		if _, err := decodeMounts([]byte(tc)); err == nil {
			t.Errorf("%s: accepted", tc)
		}
	}
}
