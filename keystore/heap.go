package keystore

import "math"

// The in-memory pool's structures hold no pointers: entries live in a slab of fixed
// chunks and refer to each other by slot, a key's number names its slot, and the heap,
// queue and AVAILABLE buckets are slices of slots. A GC cycle then has nothing to scan
// in them, however many keys the pool holds.

// slot names an entry of a slab; noSlot names none.
type slot = int32

const noSlot slot = -1

// chunkBits sets the size of a slab chunk: 1<<chunkBits entries.
const chunkBits = 12

// slab holds entries in chunks that never move, so that a *entry stays valid while
// the slab grows, and reuses the slots of deleted entries.
type slab struct {
	chunks []*[1 << chunkBits]entry
	free   []slot
	used   slot // slots handed out so far, freed or not
}

func (s *slab) get(i slot) *entry { return &s.chunks[i>>chunkBits][i&(1<<chunkBits-1)] }

// alloc returns a zeroed entry and its slot.
func (s *slab) alloc() *entry {
	var i slot
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		if int(s.used)>>chunkBits == len(s.chunks) {
			s.chunks = append(s.chunks, new([1 << chunkBits]entry))
		}
		i = s.used
		s.used++
	}
	e := s.get(i)
	*e = entry{self: i, older: noSlot, newer: noSlot, holdIndex: -1, availBucket: -1, availIndex: -1, gen: e.gen}
	return e
}

// release gives e's slot back for reuse, under the next generation; a slot that has
// been through every generation is retired, so that no key number ever repeats.
func (s *slab) release(e *entry) {
	if e.gen == math.MaxUint32 {
		return
	}
	e.gen++
	s.free = append(s.free, e.self)
}

// deadlineHeap is a binary min-heap of entries by one of their deadlines (which). Each
// entry keeps its own position in the heap (see index), so fix and remove cost
// O(log n) with no search. The hold heap orders the leases and cool-downs, whose
// lengths differ from key to key; the keep-alive heap the keys imported with a
// keep-alive TTL of their own (the others share the pool's, and a queue orders them).
type deadlineHeap struct {
	items []slot
	slab  *slab
	which int // holdDeadline or keepAliveDeadline
}

// index is where e keeps its position in h: holdIndex, or, in the keep-alive heap,
// older, which a key there does not need for the keep-alive queue.
func (h *deadlineHeap) index(e *entry) *int32 {
	if h.which == holdDeadline {
		return &e.holdIndex
	}
	return &e.older
}

// peek returns the entry whose deadline comes first, or nil.
func (h *deadlineHeap) peek() *entry {
	if len(h.items) == 0 {
		return nil
	}
	return h.slab.get(h.items[0])
}

func (h *deadlineHeap) push(e *entry) {
	*h.index(e) = int32(len(h.items))
	h.items = append(h.items, e.self)
	h.up(len(h.items) - 1)
}

// remove takes e out of the heap; e must be in it.
func (h *deadlineHeap) remove(e *entry) {
	i := int(*h.index(e))
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items = h.items[:last]
	*h.index(e) = -1
	if i != last {
		h.fix(i)
	}
	if cap(h.items) > 1024 && len(h.items) < cap(h.items)/4 {
		// Give memory back after many deadlines pass; amortised O(1).
		h.items = append(make([]slot, 0, cap(h.items)/2), h.items...)
	}
}

// fixEntry restores order after e's deadline changed.
func (h *deadlineHeap) fixEntry(e *entry) { h.fix(int(*h.index(e))) }

// fix restores order after the deadline of the entry at i changed.
func (h *deadlineHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *deadlineHeap) deadline(i int) int64 {
	return h.slab.get(h.items[i]).deadline[h.which]
}

func (h *deadlineHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	*h.index(h.slab.get(h.items[i])) = int32(i)
	*h.index(h.slab.get(h.items[j])) = int32(j)
}

func (h *deadlineHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h.deadline(i) >= h.deadline(parent) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// down sifts i towards the leaves and reports whether it moved.
func (h *deadlineHeap) down(i int) bool {
	start, n := i, len(h.items)
	for {
		child := 2*i + 1
		if child >= n {
			break
		}
		if right := child + 1; right < n && h.deadline(right) < h.deadline(child) {
			child = right
		}
		if h.deadline(child) >= h.deadline(i) {
			break
		}
		h.swap(i, child)
		i = child
	}
	return i > start
}

// keepAliveQueue lists the keys kept alive for the pools' keep-alive TTL (every
// generated key) by keep-alive deadline, earliest first. That TTL is the same for
// every key in the queue and the clock only moves forward, so a key generated or kept
// alive now has the latest deadline of all: it goes to the back, and the queue stays
// in deadline order with O(1) moves and no sifting.
type keepAliveQueue struct {
	front, back slot
	slab        *slab
}

// first returns the entry whose keep-alive ends first, or nil.
func (q *keepAliveQueue) first() *entry {
	if q.front == noSlot {
		return nil
	}
	return q.slab.get(q.front)
}

func (q *keepAliveQueue) pushBack(e *entry) {
	e.older, e.newer = q.back, noSlot
	if q.back != noSlot {
		q.slab.get(q.back).newer = e.self
	} else {
		q.front = e.self
	}
	q.back = e.self
}

func (q *keepAliveQueue) remove(e *entry) {
	if e.older != noSlot {
		q.slab.get(e.older).newer = e.newer
	} else {
		q.front = e.newer
	}
	if e.newer != noSlot {
		q.slab.get(e.newer).older = e.older
	} else {
		q.back = e.older
	}
	e.older, e.newer = noSlot, noSlot
}

func (q *keepAliveQueue) moveToBack(e *entry) {
	if q.back != e.self {
		q.remove(e)
		q.pushBack(e)
	}
}
