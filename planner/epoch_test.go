package planner

import (
	"testing"
	"time"
)

func TestSourceDateEpoch(t *testing.T) {
	tests := []struct {
		name      string
		buildArgs map[string]string
		global    envList
		want      int64 // -1: no epoch
		wantErr   bool
	}{
		{"unset", nil, nil, -1, false},
		{"build arg", map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}, nil, 1700000000, false},
		{"zero is an epoch", map[string]string{"SOURCE_DATE_EPOCH": "0"}, nil, 0, false},
		{"global ARG default", nil, envList{"SOURCE_DATE_EPOCH=1600000000"}, 1600000000, false},
		{"build arg beats the ARG default", map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}, envList{"SOURCE_DATE_EPOCH=1600000000"}, 1700000000, false},
		{"empty build arg unsets", map[string]string{"SOURCE_DATE_EPOCH": ""}, envList{"SOURCE_DATE_EPOCH=1600000000"}, -1, false},
		{"empty ARG default", nil, envList{"SOURCE_DATE_EPOCH="}, -1, false},
		{"context of a local directory", map[string]string{"SOURCE_DATE_EPOCH": "context"}, nil, -1, false},
		{"not a number", map[string]string{"SOURCE_DATE_EPOCH": "2024-01-01"}, nil, 0, true},
		{"fraction", map[string]string{"SOURCE_DATE_EPOCH": "1700000000.5"}, nil, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sourceDateEpoch(tc.buildArgs, tc.global)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want < 0 && got != nil:
				t.Fatalf("got %v, want no epoch", got)
			case tc.want >= 0 && (got == nil || !got.Equal(time.Unix(tc.want, 0))):
				t.Fatalf("got %v, want %d", got, tc.want)
			case got != nil && got.Location() != time.UTC:
				t.Fatalf("got %v, want UTC", got)
			}
		})
	}
}

// TestClampForKey checks that the epoch enters a step's key exactly when
// it changes the step's layer.
func TestClampForKey(t *testing.T) {
	epoch := time.Unix(1700000000, 0).UTC()
	other := time.Unix(1700000001, 0).UTC()
	key := func(b *build, kind string) (string, bool) {
		k := newStepKey(kind, "parent")
		k.add("x", "y")
		opt := b.clampFor(k)
		return k.sum(), opt.ClampMtime != nil
	}
	plain, clamped := key(&build{}, "run")
	if clamped {
		t.Fatal("no epoch: the layer is clamped")
	}
	withEpoch, clamped := key(&build{epoch: &epoch}, "run")
	if !clamped || withEpoch == plain {
		t.Fatalf("epoch set: clamped=%v, key changed=%v; want both", clamped, withEpoch != plain)
	}
	if k, _ := key(&build{epoch: &other}, "run"); k == withEpoch {
		t.Fatal("another epoch gives the same key")
	}
	kept, clamped := key(&build{epoch: &epoch, opt: Options{KeepTimestamps: true}}, "run")
	if clamped || kept != plain {
		t.Fatalf("rewrite-timestamp=false: clamped=%v, same key as without epoch=%v; want false, true", clamped, kept == plain)
	}
	if _, clamped := key(&build{epoch: &epoch, opt: Options{KeepTimestamps: true}}, "workdir"); !clamped {
		t.Fatal("WORKDIR under an epoch is not clamped with rewrite-timestamp=false")
	}
}
