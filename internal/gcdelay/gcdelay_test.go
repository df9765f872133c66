package gcdelay

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestStart: no collection below firstHeap; after the first one, the
// usual pacing and no limit.
func TestStart(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	runtime.GC()
	Start()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	keep := make([][]byte, 0, 64)
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 256<<10)) // 16 MiB in all
	}
	runtime.ReadMemStats(&after)
	if after.NumGC != before.NumGC {
		t.Errorf("%d collections below the first heap", after.NumGC-before.NumGC)
	}
	runtime.KeepAlive(keep)
	runtime.GC() // as the limit would
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetGCPercent(-1) != 100 {
		if time.Now().After(deadline) {
			t.Fatal("the usual pacing is not back after the first collection")
		}
		debug.SetGCPercent(-1)
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		t.Errorf("memory limit %d after the first collection, want none", limit)
	}
}
