package keystore

import (
	"math/bits"
	"math/rand/v2"
)

// availableSet holds the AVAILABLE keys for uniform random picks that skip the dead.
//
// A key whose keep-alive deadline has passed stays AVAILABLE until the expirer deletes
// it, and after an expiry storm almost all AVAILABLE keys can be dead: picks over one
// flat list would then land on the dead and find no live key. So the keys are grouped
// by keep-alive deadline into epochs of 2^shift nanoseconds, a bucket per epoch, and
// the buckets sit in a ring of ringSize positions by epoch. Every live key's deadline
// lies within one keep-alive TTL ahead, which spans fewer than ringSize epochs, so no
// two buckets that may hold a live key share a position. A pick draws a key uniformly
// from the ring (a Fenwick tree of the buckets' sizes finds it in O(log ringSize));
// when it lands in a bucket whose latest deadline has passed, every key there is dead,
// and the bucket leaves the ring whole, in O(log ringSize), for the expirer to empty.
// Rejecting the dead keeps the pick uniform over the live keys. A storm's keys share
// their deadlines (one per Generate), so they leave the ring a bucket at a time, and
// picks meet few of them.
//
// Imported keys may have a keep-alive TTL of their own, or none. The ring takes every
// key whose deadline lies at most ringAhead (three keep-alive TTLs of the pool) ahead
// when it comes: then live deadlines still span fewer than ringSize epochs. A key whose
// deadline lies further (or that has none) goes to the far bucket, out of the ring but
// drawn from together with it, so that picks stay uniform over every AVAILABLE key; a
// dead key drawn there is deleted by the pick (pickAvailable), one at a time.
//
// Like the rest of the pool it holds no pointers the GC must follow per key: buckets
// are slices of slots.
type availableSet struct {
	slab    *slab
	shift   uint            // an epoch is 2^shift ns
	ring    [ringSize]int32 // bucket id at each position, or -1
	tree    fenwick         // keys in the bucket at each ring position
	inRing  int             // keys in ring buckets, pickable
	size    int             // every AVAILABLE key, dead buckets' included
	buckets []bucket        // by id
	free    []int32         // ids of buckets not in use
	dead    int32           // the bucket, out of the ring, of keys dead when they came; -1 until needed
	far     int32           // the bucket, out of the ring but pickable, of keys due beyond ringAhead; -1 until needed
	ahead   int64           // ringAhead for this set's keep-alive TTL
}

// farLen counts the keys of the far bucket.
func (a *availableSet) farLen() int {
	if a.far < 0 {
		return 0
	}
	return len(a.buckets[a.far].items)
}

// ringBits sizes the ring: 8192 positions, of which a keep-alive TTL spans at most
// 2048 (see newAvailableSet), so an epoch is at most 1/1024 of the TTL.
const (
	ringBits     = 13
	ringSize     = 1 << ringBits
	ttlEpochBits = 11
	// ringAhead is how many keep-alive TTLs ahead a deadline may lie to go in the
	// ring: live deadlines then span at most 3*2048+1 epochs, fewer than ringSize.
	ringAhead = 3
)

type bucket struct {
	epoch  int64
	latest int64 // at or after the keep-alive deadline of every key in the bucket
	pos    int32 // ring position, or -1 once out of the ring
	items  []slot
}

func newAvailableSet(s *slab, keepAliveTTL int64) *availableSet {
	a := &availableSet{slab: s, dead: -1, far: -1, ahead: ringAhead * keepAliveTTL}
	// keepAliveTTL >> shift < 2^ttlEpochBits: live deadlines span at most that many
	// epochs plus the current one, fewer than ringSize.
	a.shift = uint(max(0, bits.Len64(uint64(keepAliveTTL))-ttlEpochBits))
	for i := range a.ring {
		a.ring[i] = -1
	}
	return a
}

func (a *availableSet) len() int { return a.size }

// pickable reports whether pick may find a key: the ring or the far bucket holds some.
func (a *availableSet) pickable() bool { return a.inRing > 0 || a.farLen() > 0 }

// add puts e among the AVAILABLE keys; now is the current time, at or after every
// deadline already set (the clock only moves forward).
func (a *availableSet) add(e *entry, now int64) {
	deadline := e.deadline[keepAliveDeadline]
	epoch := deadline >> a.shift
	var id int32
	if deadline <= now {
		// Dead already (a lease released after its key's keep-alive ran out, just
		// before the key is deleted): never to be picked.
		if a.dead < 0 {
			a.dead = a.newBucket(0, -1)
		}
		id = a.dead
	} else if deadline-now > a.ahead {
		if a.far < 0 {
			a.far = a.newBucket(0, -1)
		}
		id = a.far
	} else {
		pos := int32(epoch & (ringSize - 1))
		id = a.ring[pos]
		if id >= 0 && a.buckets[id].epoch != epoch {
			// The position's bucket is ringSize epochs older, so dead: it leaves the
			// ring for this epoch.
			a.evict(pos)
			id = -1
		}
		if id < 0 {
			id = a.newBucket(epoch, pos)
			a.ring[pos] = id
		}
	}
	b := &a.buckets[id]
	b.latest = max(b.latest, deadline)
	e.availBucket, e.availIndex = id, int32(len(b.items))
	b.items = append(b.items, e.self)
	if b.pos >= 0 {
		a.tree.add(int(b.pos), 1)
		a.inRing++
	}
	a.size++
}

// remove takes e, AVAILABLE, out of the set: swap with its bucket's last, shrink.
func (a *availableSet) remove(e *entry) {
	id := e.availBucket
	b := &a.buckets[id]
	i, last := e.availIndex, len(b.items)-1
	moved := b.items[last]
	b.items[i] = moved
	a.slab.get(moved).availIndex = i
	b.items = b.items[:last]
	e.availIndex, e.availBucket = -1, -1
	if cap(b.items) > 1024 && len(b.items) < cap(b.items)/4 {
		// Give memory back as a bucket drains; amortised O(1).
		b.items = append(make([]slot, 0, cap(b.items)/2), b.items...)
	}
	if b.pos >= 0 {
		a.tree.add(int(b.pos), -1)
		a.inRing--
	} else if last == 0 && id != a.dead && id != a.far {
		a.release(id)
	}
	a.size--
}

// pick draws a key uniformly from the ring and the far bucket and returns it, or nil
// when both are empty or the draw landed in a bucket whose keys are all dead at now
// (which then leaves the ring). The key returned may be dead: its bucket's are not all.
func (a *availableSet) pick(now int64) *entry {
	far := a.farLen()
	if a.inRing+far == 0 {
		return nil
	}
	r := rand.IntN(a.inRing + far)
	if r >= a.inRing {
		return a.slab.get(a.buckets[a.far].items[r-a.inRing])
	}
	pos, offset := a.tree.find(int32(r))
	b := &a.buckets[a.ring[pos]]
	if b.latest <= now {
		a.evict(int32(pos))
		return nil
	}
	return a.slab.get(b.items[offset])
}

// evict takes the bucket at pos out of the ring; its keys stay AVAILABLE until removed.
func (a *availableSet) evict(pos int32) {
	id := a.ring[pos]
	b := &a.buckets[id]
	a.ring[pos], b.pos = -1, -1
	a.tree.add(int(pos), -int32(len(b.items)))
	a.inRing -= len(b.items)
	if len(b.items) == 0 {
		a.release(id)
	}
}

func (a *availableSet) newBucket(epoch int64, pos int32) int32 {
	var id int32
	if n := len(a.free); n > 0 {
		id = a.free[n-1]
		a.free = a.free[:n-1]
	} else {
		id = int32(len(a.buckets))
		a.buckets = append(a.buckets, bucket{})
	}
	b := &a.buckets[id]
	b.epoch, b.latest, b.pos = epoch, 0, pos
	return id
}

// release returns an empty bucket for reuse, keeping a small backing array.
func (a *availableSet) release(id int32) {
	b := &a.buckets[id]
	if cap(b.items) > 1024 {
		b.items = nil
	}
	b.items = b.items[:0]
	a.free = append(a.free, id)
}

// fenwick is a binary indexed tree over ringSize counts: point updates and the search
// of a rank in O(ringBits).
type fenwick [ringSize + 1]int32 // 1-based

func (f *fenwick) add(pos int, delta int32) {
	for i := pos + 1; i <= ringSize; i += i & -i {
		f[i] += delta
	}
}

// find returns the position holding the rank-th unit (0-based) of the counts, and the
// rank within that position.
func (f *fenwick) find(rank int32) (pos int, offset int32) {
	i := 0
	for step := ringSize; step > 0; step >>= 1 {
		if next := i + step; next <= ringSize && f[next] <= rank {
			i = next
			rank -= f[next]
		}
	}
	return i, rank
}
