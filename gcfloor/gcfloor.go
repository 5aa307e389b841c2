// Package gcfloor sets the garbage collector's pace for a server whose live heap may be
// a few MiB or several GiB: the heap may grow by a floor between collections, or by
// an eighth of the live heap when that is more.
//
// A small pool's live heap is a few MiB, so with GOGC=100 the collector would run
// hundreds of times a second under load, each cycle for a few hundred KiB of garbage.
// A large pool's live heap runs to GiB, and with GOGC=100 the process would use twice
// that; its keys are in pointer-free memory (keystore's slab) that a cycle does not
// scan, so collecting it more often costs little. After each cycle the tuner sets GOGC
// so that the next cycle starts at live + max(floor, live/8).
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

var once sync.Once

// Set paces the collector as the package describes, from now on, with floor bytes as
// the least growth between collections. It does nothing if floor is 0 or the GOGC
// environment variable is set (the operator's choice stands). Only the first call
// takes effect.
func Set(floor uint64) {
	if floor == 0 || os.Getenv("GOGC") != "" {
		return
	}
	once.Do(func() {
		t := &tuner{floor: floor, current: debug.SetGCPercent(100), sample: []metrics.Sample{{Name: liveHeap}}}
		debug.SetGCPercent(t.current)
		t.arm()
	})
}

// liveHeap is the runtime metric of the heap the last cycle marked live.
const liveHeap = "/gc/heap/live:bytes"

type tuner struct {
	floor   uint64
	current int
	sample  []metrics.Sample
}

// largeHeapShare is the growth between collections of a heap above 8 floors, as a
// share of the live heap: an eighth.
const largeHeapShare = 8

// marker is garbage whose finalizer runs once per GC cycle: it re-tunes and makes the
// next marker. It holds a pointer, so that it is not a tiny allocation, whose
// finalizer might not run.
type marker struct{ t *tuner }

func (t *tuner) arm() { runtime.SetFinalizer(&marker{t}, func(m *marker) { m.t.tune() }) }

// tune sets the GOGC that starts the next cycle at live + max(floor, live/8).
func (t *tuner) tune() {
	defer t.arm()
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := max(t.sample[0].Value.Uint64(), 1)
	growth := max(t.floor, live/largeHeapShare)
	percent := int(min(growth*100/live, 1<<20))
	if percent != t.current {
		debug.SetGCPercent(percent)
		t.current = percent
	}
}
