package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// gcPercent reads the GOGC in force.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestFloor: with a live heap far below the floor, GOGC rises so that the next cycle
// starts near the floor; once the live heap is many times the floor, GOGC is an eighth
// of it (12), so a large heap does not grow to twice its size.
func TestFloor(t *testing.T) {
	const floor = 8 << 20
	base := gcPercent()
	defer debug.SetGCPercent(base)
	t.Setenv("GOGC", "")
	Set(floor)
	waitPercent := func(ok func(int) bool) int {
		var p int
		require.Eventually(t, func() bool {
			runtime.GC() // a cycle, whose marker's finalizer tunes
			p = gcPercent()
			return ok(p)
		}, 10*time.Second, 10*time.Millisecond, "GOGC stayed at %d", p)
		return p
	}
	small := waitPercent(func(p int) bool { return p > 200 })
	t.Logf("GOGC with a small live heap: %d", small)

	live := make([]byte, 16*floor) // a live heap of many floors
	for i := range live {
		live[i] = 1
	}
	waitPercent(func(p int) bool { return p == 100/largeHeapShare })
	runtime.KeepAlive(live)
}
