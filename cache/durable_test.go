package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDurableAfterPublish: a commit publishes at once with a mark naming
// this boot; Close leaves a record that covers it. A layer marked by
// another boot is trusted only if that boot's record covers it; otherwise
// it is absent (and removed), and kiln verify reports it.
func TestDurableAfterPublish(t *testing.T) {
	requireRoot(t)
	if currentBoot() == "" {
		t.Skip("no boot id on this kernel: publishes sync first")
	}
	ctx := context.Background()
	s := openStore(t)
	info := commitTree(t, s)
	infoPath := filepath.Join(filepath.Dir(info.Dir), "info.json")
	f := readInfoFile(t, infoPath)
	if f.Unsynced == nil || f.Unsynced.Boot != currentBoot() {
		t.Fatalf("info.json: want a mark naming boot %s, got %+v", currentBoot(), f.Unsynced)
	}
	if err := s.waitDurable(); err != nil {
		t.Fatal(err)
	}
	rec, err := os.ReadFile(filepath.Join(s.Root, "durable", currentBoot()))
	if err != nil {
		t.Fatal(err)
	}
	until, _ := strconv.ParseInt(strings.TrimSpace(string(rec)), 10, 64)
	if until < f.Unsynced.At {
		t.Fatalf("record %d does not cover the publish at %d", until, f.Unsynced.At)
	}

	const other = "00000000-0000-4000-8000-000000000001"
	for _, tc := range []struct {
		name    string
		at      int64
		record  string // ROOT/durable/other, "" for none
		trusted bool
	}{
		{"another boot, no record", 5, "", false},
		{"another boot, record before it", 5, "4", false},
		{"another boot, record covers it", 5, "5", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			info := commitTree(t, s)
			if err := s.waitDurable(); err != nil {
				t.Fatal(err)
			}
			infoPath := filepath.Join(filepath.Dir(info.Dir), "info.json")
			f := readInfoFile(t, infoPath)
			f.Unsynced = &unsyncedMark{Boot: other, At: tc.at}
			data, _ := json.Marshal(f)
			if err := os.WriteFile(infoPath, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.record != "" {
				if err := os.WriteFile(filepath.Join(s.Root, "durable", other), []byte(tc.record+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			rep, _, err := s.verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			reported := false
			for _, p := range rep.Problems {
				if p.Name == info.DiffID.String() && strings.Contains(p.What, "restarted") {
					reported = true
				}
			}
			if reported == tc.trusted {
				t.Errorf("kiln verify reported it: %v, want %v (%+v)", reported, !tc.trusted, rep.Problems)
			}
			_, ok, err := s.LayerByDiffID(info.DiffID)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.trusted {
				t.Fatalf("layer found: %v, want %v", ok, tc.trusted)
			}
			if _, err := os.Stat(filepath.Dir(info.Dir)); (err == nil) != tc.trusted {
				t.Errorf("layer directory kept: %v, want %v", err == nil, tc.trusted)
			}
		})
	}
}

func readInfoFile(t *testing.T, path string) infoFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f infoFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// commitTree commits buildTree's tree as a new layer of s.
func commitTree(t *testing.T, s *Store) LayerInfo {
	t.Helper()
	dir, err := s.TempDir("upper-")
	if err != nil {
		t.Fatal(err)
	}
	buildTree(t, dir)
	info, _, err := s.CommitDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestStoredBlobCopyTo: a stored blob copies itself whole into a file and
// checks its digest on the way; a damaged one fails and is removed, as a
// read of it would.
func TestStoredBlobCopyTo(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	info := commitTree(t, s)
	copyTo := func() (*os.File, int64, error) {
		rc, err := s.Layer(info, "").Compressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		dst, err := os.CreateTemp(t.TempDir(), "copy-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dst.Close() })
		n, err := rc.(*storedBlob).CopyTo(context.Background(), dst)
		return dst, n, err
	}
	dst, n, err := copyTo()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(s.blobPath(info.Digest))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst.Name())
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(want)) || !bytes.Equal(got, want) {
		t.Fatalf("copied %d bytes, not the blob's %d", n, len(want))
	}
	damaged := append([]byte(nil), want...)
	damaged[len(damaged)/2] ^= 0xff
	if err := os.WriteFile(s.blobPath(info.Digest), damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := copyTo(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("copy of a damaged blob: %v, want it refused as damaged", err)
	}
	if _, err := os.Stat(s.blobPath(info.Digest)); !os.IsNotExist(err) {
		t.Errorf("the damaged blob is still in the store: %v", err)
	}
}
