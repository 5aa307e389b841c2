// Package gcfloor gives the garbage collector a heap floor: below it, the heap may grow
// to the floor before a cycle starts; above it, GOGC rules as usual.
//
// A small pool's live heap is a few MiB, so with GOGC=100 the collector would run
// hundreds of times a second under load, each cycle for a few hundred KiB of garbage.
// A fixed higher GOGC would fix that and make a 10-million-key pool (over a GiB live)
// use many times its live heap. The floor does neither: after each cycle it sets GOGC
// so that the next cycle starts at max(floor, live × (1 + GOGC/100)).
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

var once sync.Once

// Set keeps the heap's next GC target at or above floor bytes from now on, with the
// GOGC in force at the first call (the GOGC environment variable, 100 by default) as
// the percentage above the floor. It does nothing if floor is 0 or GOGC is off. Only
// the first call takes effect.
func Set(floor uint64) {
	if floor == 0 {
		return
	}
	once.Do(func() {
		base := debug.SetGCPercent(100)
		debug.SetGCPercent(base)
		if base < 0 {
			return
		}
		t := &tuner{floor: floor, base: base, current: base, sample: []metrics.Sample{{Name: liveHeap}}}
		t.arm()
	})
}

// liveHeap is the runtime metric of the heap the last cycle marked live.
const liveHeap = "/gc/heap/live:bytes"

type tuner struct {
	floor         uint64
	base, current int
	sample        []metrics.Sample
}

// marker is garbage whose finalizer runs once per GC cycle: it re-tunes and makes the
// next marker. It holds a pointer, so that it is not a tiny allocation, whose
// finalizer might not run.
type marker struct{ t *tuner }

func (t *tuner) arm() { runtime.SetFinalizer(&marker{t}, func(m *marker) { m.t.tune() }) }

// tune sets the GOGC that puts the next target at the floor, if the live heap is
// small enough for that to be above the usual target, or the base GOGC.
func (t *tuner) tune() {
	defer t.arm()
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := max(t.sample[0].Value.Uint64(), 1)
	percent := t.base
	if target := live + live*uint64(t.base)/100; target < t.floor {
		percent = int(min((t.floor-live)*100/live, 1<<20))
	}
	if percent != t.current {
		debug.SetGCPercent(percent)
		t.current = percent
	}
}
