package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDetachedSync: without KILN_SYNC=wait, a build that stored layers
// exits without waiting for the disk; a detached kiln then syncs the store
// and records, for this boot, a time that covers every layer the build
// published.
func TestDetachedSync(t *testing.T) {
	needRoot(t)
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Skipf("no boot id: stores sync before publishing: %v", err)
	}
	reg := registryWithBases(t)
	root := t.TempDir()
	ctx := t.TempDir()
	df := "FROM " + reg + "/library/busybox:latest\nRUN echo hi > /hi\nCOPY Dockerfile /df\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kilnBin, "build", "--root", root, "--progress=plain", ctx)
	cmd.Env = append(withoutEnv(os.Environ(), "KILN_SYNC"), "KILN_SYNC=detach")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// Every layer this build published carries its mark; the record must
	// come to cover the latest.
	var latest int64
	infos, _ := filepath.Glob(filepath.Join(root, "layers", "*", "info.json"))
	for _, p := range infos {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			Unsynced *struct {
				At int64 `json:"at"`
			} `json:"unsynced"`
		}
		if err := json.Unmarshal(data, &info); err != nil {
			t.Fatal(err)
		}
		if info.Unsynced != nil && info.Unsynced.At > latest {
			latest = info.Unsynced.At
		}
	}
	if latest == 0 {
		t.Fatalf("no layer of the build was published unsynced (%d layers)", len(infos))
	}
	rec := filepath.Join(root, "durable", strings.TrimSpace(string(boot)))
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(rec)
		if err == nil {
			if n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); n >= latest {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record covering %d in %s after 30 s (%v, %q)", latest, rec, err, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The detached process is done once its record is in place: nothing
	// of it writes into root after that.
}

func withoutEnv(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
