// Package gcdelay holds kiln's first garbage collection back until the
// heap is worth collecting.
package gcdelay

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
)

// firstHeap is how much memory kiln uses before its first garbage
// collection.
const firstHeap = 64 << 20

// Start leaves the garbage collector off until kiln's memory reaches
// firstHeap, then turns it to its usual pacing, unless GOGC or GOMEMLIMIT
// is set. Most builds (a no-op rebuild, a few RUN steps) stay below that
// and never collect: with the default pacing, a no-op rebuild of a
// 10,000-file context spent about 8 of its 40 ms marking a heap that
// was all live. A big build collects as before, from firstHeap on.
func Start() {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(firstHeap)
	// The first collection, which the limit starts, finalizes the
	// sentinel; from then on the usual pacing applies.
	sentinel := new([32]byte)
	runtime.SetFinalizer(sentinel, func(*[32]byte) {
		debug.SetGCPercent(100)
		debug.SetMemoryLimit(math.MaxInt64)
	})
}
