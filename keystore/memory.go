package keystore

import (
	"context"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// The two deadlines of an entry: holds (leases and cool-downs) are ordered by a heap
// (their lengths differ), keep-alives by a queue (their TTL is the pool's), or, for
// imported keys with a TTL of their own, by a heap.
const (
	holdDeadline      = 0 // when a BLOCKED key's lease runs out, or a COOLING key's cool-down ends
	keepAliveDeadline = 1 // when the key is deleted unless kept alive; never for noDeadline
)

// noDeadline is the keep-alive deadline of a key kept until deleted.
const noDeadline = math.MaxInt64

// The states of an entry; stateFree holds no key.
const (
	stateFree uint8 = iota
	stateAvailable
	stateBlocked
	stateCooling
	stateQuarantined
)

// stateStatus is the Status of each state.
var stateStatus = [...]Status{"", Available, Blocked, Cooling, Quarantined}

// How a key is kept alive: for the pool's keep-alive TTL (the queue), for a TTL of its
// own (the keep-alive heap; memory.imported holds the TTL), or not at all.
const (
	keepPool uint8 = iota
	keepOwn
	keepNone
)

// Bounds on the work of one lock hold.
const (
	// expiryBatch is how many due transitions the expirer applies before it lets
	// requests in; a storm of a million deadlines is a thousand short holds.
	expiryBatch = 1000
	// statsBatches bounds the expiry batches one Stats applies before it answers: a
	// few milliseconds of work.
	statsBatches = 8
)

// entry is one key. Times are nanoseconds on the store's monotonic timeline (see
// memory.now). It holds no pointers (see heap.go).
type entry struct {
	created    int64    // when generated or imported
	deadline   [2]int64 // indexed by holdDeadline, keepAliveDeadline
	acquiredAt int64    // start of the current (or last) lease
	fence      int64    // fence of the current (or last) lease; its token derives from it
	self       slot     // where the entry is in the slab
	// older and newer are the neighbours in the keep-alive queue (keepPool); in the
	// keep-alive heap (keepOwn), older is the key's position there.
	older, newer slot
	holdIndex    int32 // position in the hold heap; -1 unless BLOCKED or COOLING
	availBucket  int32 // bucket of memory.avail; -1 unless AVAILABLE
	availIndex   int32 // position in that bucket; -1 unless AVAILABLE

	pool          int32 // index in memory.pools
	timesAcquired uint32
	leasesExpired uint32
	failures      uint32
	consecutive   uint32 // failures since the last unblock without one, or Restore
	// gen counts the keys the entry's slot has held before this one; with the slot it
	// makes the key's number, and so its id (see keyNumber).
	gen      uint32
	pos      uint32 // in its pool's listing order (mpool.at)
	state    uint8  // stateFree, stateAvailable, …
	keep     uint8  // keepPool, keepOwn or keepNone
	imported bool   // memory.imported holds its secret and name
}

func (e *entry) blocked() bool { return e.state == stateBlocked }

// live reports whether the entry holds a key, in any state.
func (e *entry) live() bool { return e.state != stateFree }

// importedKey is what the in-memory store keeps of an imported key beyond its entry.
type importedKey struct {
	secret, name string
	digest       SecretDigest
	keepAliveTTL int64 // for keepOwn
}

// keyNumber is the number behind e's key id: its slot and the slot's generation. No
// two keys ever share one: a slot's generation grows with each key it holds, and a
// slot whose generation runs out is never used again (slab.release). So a key is found
// from its id with no index of ids, and an id of a deleted key finds nothing.
func keyNumber(e *entry) uint64 { return uint64(e.gen)<<32 | uint64(uint32(e.self)) }

// find returns the live entry whose key number is n, or nil.
func (m *memory) find(n uint64) *entry {
	i := uint32(n)
	if i >= uint32(m.slab.used) {
		return nil
	}
	e := m.slab.get(slot(i))
	if e.gen != uint32(n>>32) || !e.live() {
		return nil
	}
	return e
}

// memory is the in-memory Backend: a slab of keys found by their numbers, an indexed
// min-heap of hold deadlines (leases and cool-downs), a queue of keep-alive deadlines
// for the pools' TTL and a heap of those of imported keys with a TTL of their own,
// shared by every pool, and for each pool a set of AVAILABLE keys for uniform picks that skip dead
// keys (available.go) and the index of its keys by state that pages of List
// walk (mpool.go). A background expirer sleeps until the earliest deadline and applies
// due transitions in bounded batches; every request also settles the deadlines of the
// key it touches, so it never sees a transition that is due but not yet applied.
type memory struct {
	clock clockwork.Clock
	opts  Options
	ids   *IDCodec
	lanes *Lanes
	base  time.Time // timeline origin: a reading of clock with the monotonic clock in it

	mu        sync.Mutex
	slab      slab
	pools     []*mpool          // by index, as entries name them
	poolIndex map[string]*mpool // by name
	names     []string          // of pools, sorted
	holds     deadlineHeap      // leases and cool-downs
	keepAlive keepAliveQueue
	keepOwn   deadlineHeap            // keep-alives of imported keys with a TTL of their own
	holders   map[uint64]string       // the holders of the leases that have one, by key number
	imported  map[uint64]*importedKey // by key number
	hasher    *SecretHasher
	wakeAt    int64 // the deadline the expirer sleeps until
	// The events of the lock hold so far, published together before it ends (unlock),
	// and the key numbers behind their ids.
	pending     []Event
	pendingKeys []uint64
	idText      []byte

	kick      chan struct{} // tells the expirer of a deadline earlier than wakeAt
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ Backend = (*memory)(nil)

// NewMemory returns a pool kept in this process's memory, on clock
// (clockwork.NewRealClock() in production), and starts its expirer; Close stops it.
func NewMemory(clock clockwork.Clock, opts Options) (*Pool, error) {
	return NewPool(clock, opts, openMemory(clock))
}

// openMemory is NewMemory's backend, for NewPool.
func openMemory(clock clockwork.Clock) func(Env) (Backend, *IDCodec, error) {
	return func(env Env) (Backend, *IDCodec, error) {
		ids, err := NewIDCodec(NewSecret())
		if err != nil {
			return nil, nil, err
		}
		m := &memory{
			clock:     clock,
			opts:      env.Options,
			ids:       ids,
			lanes:     env.Lanes,
			base:      clock.Now(),
			poolIndex: map[string]*mpool{},
			holders:   map[uint64]string{},
			imported:  map[uint64]*importedKey{},
			hasher:    NewSecretHasher(NewSecret()),
			wakeAt:    math.MaxInt64,
			kick:      make(chan struct{}, 1),
			stop:      make(chan struct{}),
			done:      make(chan struct{}),
		}
		m.holds = deadlineHeap{slab: &m.slab, which: holdDeadline}
		m.keepOwn = deadlineHeap{slab: &m.slab, which: keepAliveDeadline}
		m.keepAlive = keepAliveQueue{front: noSlot, back: noSlot, slab: &m.slab}
		go m.expire()
		return m, ids, nil
	}
}

// now reads the clock as nanoseconds since base. Real clock readings carry the
// monotonic clock, so a jump of the wall clock moves no deadline.
func (m *memory) now() int64 { return int64(m.clock.Now().Sub(m.base)) }

// at turns a timeline instant back into a time.Time.
func (m *memory) at(t int64) time.Time { return m.base.Add(time.Duration(t)) }

// Generate implements Backend.
func (m *memory) Generate(ctx context.Context, pool string, count int) ([]Record, error) {
	recs := make([]Record, count)
	m.mu.Lock()
	defer m.unlock()
	p, err := m.makePool(pool)
	if err != nil {
		return nil, err
	}
	now := m.now()
	deadline := now + int64(m.opts.KeepAliveTTL)
	// One event a key: grown once, not by doubling (a cold store's first Generate of
	// MaxGenerate keys would otherwise allocate the pending events twice over).
	m.pending = slices.Grow(m.pending, count)
	m.pendingKeys = slices.Grow(m.pendingKeys, count)
	for i := range count {
		e := m.slab.alloc()
		e.pool = p.idx
		p.place(e)
		e.created, e.deadline[keepAliveDeadline] = now, deadline
		p.count++
		m.keepAlive.pushBack(e)
		m.emit(EventGenerated, e, now)
		m.makeAvailable(e, now)
		recs[i] = m.record(e)
	}
	m.noteDeadline(deadline)
	m.serveWaiters(p, now)
	return recs, nil
}

// Import implements Backend.
func (m *memory) Import(ctx context.Context, pool string, keys []KeyInput, keepAliveTTL time.Duration) ([]Record, error) {
	// The digests cost the length of the secrets: computed before the lock.
	digests := make([]SecretDigest, len(keys))
	for i, k := range keys {
		digests[i] = m.hasher.Digest(pool, k.Secret)
	}
	recs := make([]Record, len(keys))
	m.mu.Lock()
	defer m.unlock()
	now := m.now()
	held := m.poolIndex[pool]
	seen := make(map[SecretDigest]struct{}, len(keys))
	for i, d := range digests {
		at, inPool := held.secret(d)
		// A key whose keep-alive ran out holds its secret no more, applied or not.
		inPool = inPool && m.settle(m.slab.get(at), now)
		if _, again := seen[d]; inPool || again {
			return nil, &DuplicateError{Index: i}
		}
		seen[d] = struct{}{}
	}
	p, err := m.makePool(pool)
	if err != nil {
		return nil, err
	}
	if p.bySecret == nil {
		p.bySecret = make(map[SecretDigest]slot, len(keys))
	}
	keep, deadline := keepNone, int64(noDeadline)
	switch {
	case keepAliveTTL == m.opts.KeepAliveTTL:
		keep, deadline = keepPool, now+int64(keepAliveTTL)
	case keepAliveTTL > 0:
		keep, deadline = keepOwn, now+int64(keepAliveTTL)
	}
	m.pending = slices.Grow(m.pending, len(keys))
	m.pendingKeys = slices.Grow(m.pendingKeys, len(keys))
	for i, k := range keys {
		e := m.slab.alloc()
		e.pool = p.idx
		p.place(e)
		e.created, e.deadline[keepAliveDeadline], e.keep, e.imported = now, deadline, keep, true
		p.count++
		m.imported[keyNumber(e)] = &importedKey{secret: k.Secret, name: k.Name, digest: digests[i], keepAliveTTL: int64(keepAliveTTL)}
		p.bySecret[digests[i]] = e.self
		switch keep {
		case keepPool:
			m.keepAlive.pushBack(e)
		case keepOwn:
			m.keepOwn.push(e)
		}
		m.emit(EventImported, e, now)
		m.makeAvailable(e, now)
		recs[i] = m.record(e)
	}
	m.noteDeadline(deadline)
	m.serveWaiters(p, now)
	return recs, nil
}

// secret returns the key of p, which may be nil, whose secret has digest d.
func (p *mpool) secret(d SecretDigest) (slot, bool) {
	if p == nil {
		return noSlot, false
	}
	i, ok := p.bySecret[d]
	return i, ok
}

// Acquire implements Backend.
func (m *memory) Acquire(ctx context.Context, pool string, ttl time.Duration, holder string, w *Waiter) (Record, error) {
	m.mu.Lock()
	defer m.unlock()
	now := m.now()
	m.applyDue(now, RequestBatch)
	p := m.poolIndex[pool]
	if p == nil {
		// Never made: no key, and the waiter waits for the pool's first.
		if w != nil {
			m.lanes.Made(pool).Waiters.Push(w)
		}
		return Record{}, ErrNoKey
	}
	e := m.pickAvailable(p, now)
	for e == nil && m.mayFree(p, now) {
		// The picks landed on dead keys, or a lease that ran out may free a key: help
		// the expirer a batch at a time, letting other requests in between, until a
		// key is found or none can be free. NOT_FOUND is never said while a key is
		// free, and a storm of dead keys is not drained first to say it.
		m.applyDue(now, expiryBatch)
		if e = m.pickAvailable(p, now); e != nil || !m.mayFree(p, now) {
			break
		}
		m.unlock()
		runtime.Gosched()
		m.mu.Lock()
		now = m.now()
		e = m.pickAvailable(p, now)
	}
	if e == nil {
		if w != nil {
			p.lane.Waiters.Push(w)
		}
		return Record{}, ErrNoKey
	}
	m.lease(e, now, int64(ttl), holder)
	return m.leasedRecord(e), nil
}

// mayFree reports whether a key of p may be free at now although the picks found
// none: an AVAILABLE key may still be alive, or a lease (of any pool: the heap is
// shared) or a cool-down has run out.
func (m *memory) mayFree(p *mpool, now int64) bool {
	hold := m.holds.peek()
	return p.avail != nil && p.avail.len() > 0 && p.availHorizon > now ||
		hold != nil && hold.deadline[holdDeadline] <= now
}

// Unblock implements Backend.
func (m *memory) Unblock(ctx context.Context, n uint64, fence int64) (Record, error) {
	return m.UnblockWith(ctx, n, fence, 0, false)
}

// UnblockWith implements Backend.
func (m *memory) UnblockWith(ctx context.Context, n uint64, fence int64, cooldown time.Duration, failed bool) (Record, error) {
	return m.update(n, func(e *entry, now int64) error {
		if !e.blocked() {
			return ErrNotBlocked
		}
		if fence != 0 && fence != e.fence {
			return ErrLeaseMismatch
		}
		m.endLease(e)
		m.emit(EventUnblocked, e, now)
		m.afterLease(e, now, now, failed, int64(cooldown))
		return nil
	})
}

// Restore implements Backend.
func (m *memory) Restore(ctx context.Context, n uint64) (Record, error) {
	return m.update(n, func(e *entry, now int64) error {
		switch e.state {
		case stateCooling:
			m.endCooling(e)
		case stateQuarantined:
			p := m.pools[e.pool]
			p.leave(e, Quarantined)
			p.quarantined--
		default:
			return ErrNotHeldBack
		}
		e.consecutive = 0
		m.emit(EventRestored, e, now)
		m.makeAvailable(e, now)
		return nil
	})
}

// Renew implements Backend.
func (m *memory) Renew(ctx context.Context, n uint64, fence int64, ttl time.Duration) (Record, error) {
	var secret string
	rec, err := m.update(n, func(e *entry, now int64) error {
		if !e.blocked() {
			return ErrNotBlocked
		}
		if fence != e.fence {
			return ErrLeaseMismatch
		}
		e.deadline[holdDeadline] = min(now+int64(ttl), e.acquiredAt+int64(m.opts.MaxLeaseTTL))
		m.holds.fixEntry(e)
		m.noteDeadline(e.deadline[holdDeadline])
		secret = m.secretOf(e)
		return nil
	})
	if secret != "" {
		rec.Ext.Secret = secret // an imported key's record has its Ext
	}
	return rec, err
}

// KeepAlive implements Backend.
func (m *memory) KeepAlive(ctx context.Context, n uint64) (Record, error) {
	return m.update(n, func(e *entry, now int64) error {
		switch e.keep {
		case keepPool:
			e.deadline[keepAliveDeadline] = now + int64(m.opts.KeepAliveTTL)
			m.keepAlive.moveToBack(e)
		case keepOwn:
			e.deadline[keepAliveDeadline] = now + m.imported[keyNumber(e)].keepAliveTTL
			m.keepOwn.fixEntry(e)
			m.noteDeadline(e.deadline[keepAliveDeadline])
		default:
			return nil // kept until deleted
		}
		if e.state == stateAvailable {
			p := m.pools[e.pool]
			p.avail.remove(e) // to the bucket of its new deadline
			p.avail.add(e, now)
			p.availHorizon = max(p.availHorizon, e.deadline[keepAliveDeadline])
		}
		return nil
	})
}

// Get implements Backend.
func (m *memory) Get(ctx context.Context, n uint64) (Record, error) {
	return m.update(n, func(*entry, int64) error { return nil })
}

// Delete implements Backend.
func (m *memory) Delete(ctx context.Context, n uint64) error {
	_, err := m.update(n, func(e *entry, now int64) error {
		m.emit(EventDeleted, e, now) // while e still holds the key's number
		m.remove(e)
		return nil
	})
	return err
}

// update runs change on the live entry n under the lock, after settling its
// deadlines, and returns a record of the entry as change left it; then it serves the
// waiters, which may lease the entry anew.
func (m *memory) update(n uint64, change func(e *entry, now int64) error) (Record, error) {
	m.mu.Lock()
	defer m.unlock()
	now := m.now()
	e := m.find(n)
	if e == nil || !m.settle(e, now) {
		return Record{}, ErrNoKey
	}
	if err := change(e, now); err != nil {
		return Record{}, err
	}
	rec := m.record(e)
	m.serveWaiters(m.pools[e.pool], now)
	return rec, nil
}

// Stats implements Backend.
//
// Its counts include every transition due, unless more than statsBatches batches are
// due at once (an expiry storm): then it answers after those, without waiting for the
// rest, which the expirer finishes within the storm's drain time. So do those of
// Pools and List.
func (m *memory) Stats(ctx context.Context, pool string) (Stats, error) {
	m.lockSettled(statsBatches)
	defer m.unlock()
	return m.poolIndex[pool].stats(), nil
}

// Pools implements Backend.
func (m *memory) Pools(ctx context.Context) ([]PoolStats, error) {
	m.lockSettled(statsBatches)
	defer m.unlock()
	pools := make([]PoolStats, len(m.names))
	for i, name := range m.names {
		pools[i] = PoolStats{Name: name, Stats: m.poolIndex[name].stats()}
	}
	return pools, nil
}

// List implements Backend.
func (m *memory) List(ctx context.Context, pool string, status Status, from uint64, limit int) ([]Record, error) {
	now := m.lockSettled(statsBatches)
	defer m.unlock()
	p := m.poolIndex[pool]
	if p == nil {
		return nil, nil
	}
	recs := make([]Record, 0, limit)
	for at := int(min(from, math.MaxUint32)); len(recs) < limit; {
		var slots []slot
		if slots, at = p.list(status, at, limit-len(recs)); len(slots) == 0 {
			break
		}
		for _, i := range slots {
			// A key whose deadline passed in a storm that lockSettled left to the
			// expirer is listed as it is now, or not at all. (Settling makes no key,
			// so no slot listed is reused meanwhile.)
			if e := m.slab.get(i); e.live() && m.settle(e, now) && (status == "" || e.status() == status) {
				recs = append(recs, m.record(e))
			}
		}
	}
	return recs, nil
}

// CatchUp implements Backend: events reach the hub as they happen.
func (m *memory) CatchUp(ctx context.Context, pool string) error { return m.Ready(ctx) }

// Ready implements Backend.
func (m *memory) Ready(context.Context) error {
	select {
	case <-m.stop:
		return Errorf(EUNAVAILABLE, "the store is closed")
	default:
		return nil
	}
}

// Replicas implements Backend: an in-memory pool has one server, this one.
func (m *memory) Replicas(ctx context.Context) (int, error) { return 1, m.Ready(ctx) }

// Close implements Backend.
func (m *memory) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
	})
	return nil
}

// record copies e for the Pool.
func (m *memory) record(e *entry) Record {
	r := Record{
		N:             keyNumber(e),
		Pos:           uint64(e.pos),
		Pool:          m.pools[e.pool].name,
		CreatedAt:     m.at(e.created),
		AcquiredAt:    m.at(e.acquiredAt),
		TimesAcquired: int64(e.timesAcquired),
		LeasesExpired: int64(e.leasesExpired),
	}
	if e.failures > 0 || e.imported || e.state == stateCooling || e.state == stateQuarantined {
		r.Ext = &RecordExt{Failures: int64(e.failures), ConsecutiveFailures: int64(e.consecutive)}
	}
	if r.ExpiresAt = Never; e.keep != keepNone {
		r.ExpiresAt = m.at(e.deadline[keepAliveDeadline])
	}
	switch e.state {
	case stateBlocked:
		r.Fence = e.fence
		r.LeaseExpiresAt = m.at(e.deadline[holdDeadline])
		r.Holder = m.holders[r.N]
	case stateCooling:
		r.Ext.Status, r.Ext.CoolingUntil = Cooling, m.at(e.deadline[holdDeadline])
	case stateQuarantined:
		r.Ext.Status = Quarantined
	}
	if e.imported {
		r.Ext.Name = m.imported[r.N].name
	}
	return r
}

// leasedRecord is record for the holder of e's lease: with the secret, if imported.
func (m *memory) leasedRecord(e *entry) Record {
	r := m.record(e)
	if e.imported {
		r.Ext.Secret = m.secretOf(e)
	}
	return r
}

// secretOf returns the secret of e if it was imported, else "".
func (m *memory) secretOf(e *entry) string {
	if !e.imported {
		return ""
	}
	return m.imported[keyNumber(e)].secret
}

// The transitions below run under m.mu.

// emit records an event of e, to be published when the lock hold ends.
func (m *memory) emit(t EventType, e *entry, at int64) {
	m.pending = append(m.pending, Event{Pool: m.pools[e.pool].name, Type: t, At: m.at(at)})
	m.pendingKeys = append(m.pendingKeys, keyNumber(e))
}

// publish hands the pending events to their pools' hubs, in order, at once: their ids
// are cut from one string, and each hub takes its run of them under one lock.
func (m *memory) publish() {
	if len(m.pending) == 0 {
		return
	}
	m.idText = m.idText[:0]
	for _, n := range m.pendingKeys {
		m.idText = m.ids.AppendKeyID(m.idText, n)
	}
	text := string(m.idText)
	for i := range m.pending {
		m.pending[i].KeyID = text[i*IDLength : (i+1)*IDLength]
	}
	for run := m.pending; len(run) > 0; {
		n := 1
		for n < len(run) && run[n].Pool == run[0].Pool {
			n++
		}
		m.poolIndex[run[0].Pool].lane.Events.PublishAll(run[:n])
		run = run[n:]
	}
	clear(m.pending) // drop the ids for the GC
	m.pending, m.pendingKeys = m.pending[:0], m.pendingKeys[:0]
	if cap(m.pending) > 1<<16 { // after a large Generate
		m.pending, m.pendingKeys, m.idText = nil, nil, nil
	}
}

// unlock ends a lock hold: its events are published, in order, before any later
// hold's.
func (m *memory) unlock() {
	m.publish()
	m.mu.Unlock()
}

// pickAvailable returns a uniformly random AVAILABLE key of p that is still alive, or
// nil. It deletes the dead keys it lands on; MaxPicks bounds those and the dead buckets.
func (m *memory) pickAvailable(p *mpool, now int64) *entry {
	for range MaxPicks {
		if p.avail == nil {
			return nil // the pool's last key has gone
		}
		e := p.avail.pick(now)
		switch {
		case e != nil && e.deadline[keepAliveDeadline] > now:
			return e
		case e != nil:
			m.expireKey(e, now)
		case !p.avail.pickable():
			return nil
		}
	}
	return nil
}

// lease blocks the AVAILABLE (or just released) entry e under a new lease.
func (m *memory) lease(e *entry, now, ttl int64, holder string) {
	p := m.pools[e.pool]
	if e.availIndex >= 0 {
		m.takeAvailable(e)
	}
	p.lastFence++
	e.fence = p.lastFence
	e.acquiredAt = now
	e.timesAcquired++
	e.state = stateBlocked
	e.deadline[holdDeadline] = now + ttl
	m.holds.push(e)
	p.enter(e, Blocked)
	m.noteDeadline(e.deadline[holdDeadline])
	m.emit(EventAcquired, e, now)
	if holder != "" {
		m.holders[keyNumber(e)] = holder
		m.pending[len(m.pending)-1].Holder = holder
	}
}

// endLease takes BLOCKED e out of the leases.
func (m *memory) endLease(e *entry) {
	m.holds.remove(e)
	m.pools[e.pool].leave(e, Blocked)
	delete(m.holders, keyNumber(e))
	e.state = stateFree // until the caller says where it goes
}

// endCooling takes COOLING e out of the cool-downs.
func (m *memory) endCooling(e *entry) {
	p := m.pools[e.pool]
	m.holds.remove(e)
	p.leave(e, Cooling)
	p.cooling--
	e.state = stateFree // until the caller says where it goes
}

// afterLease sends e, whose lease ended at (now, or the lease's deadline), where the
// contract's table says: a failure counted or the consecutive count reset, then
// QUARANTINED at Options.QuarantineAfter consecutive failures, else COOLING until
// at+cooldown if cooldown is not zero, else AVAILABLE. Callers then serveWaiters.
func (m *memory) afterLease(e *entry, at, now int64, failed bool, cooldown int64) {
	p := m.pools[e.pool]
	if failed {
		e.failures++
		e.consecutive++
	} else {
		e.consecutive = 0
	}
	switch q := m.opts.QuarantineAfter; {
	case failed && q > 0 && int64(e.consecutive) >= int64(q):
		e.state = stateQuarantined
		p.enter(e, Quarantined)
		p.quarantined++
		m.emit(EventQuarantined, e, at)
	case cooldown > 0:
		e.state = stateCooling
		e.deadline[holdDeadline] = at + cooldown
		m.holds.push(e)
		p.enter(e, Cooling)
		p.cooling++
		m.emit(EventCooled, e, at)
		m.noteDeadline(e.deadline[holdDeadline])
	default:
		m.makeAvailable(e, now)
	}
}

// makeAvailable puts e, no longer leased, among the AVAILABLE keys. Callers then
// serveWaiters, after taking their own record: whoever freed the key must not see
// the next holder's token.
func (m *memory) makeAvailable(e *entry, now int64) {
	p := m.pools[e.pool]
	if p.avail == nil {
		p.avail = newAvailableSet(&m.slab, int64(m.opts.KeepAliveTTL))
	}
	p.avail.add(e, now)
	e.state = stateAvailable
	p.enter(e, Available)
	p.availHorizon = max(p.availHorizon, e.deadline[keepAliveDeadline])
}

// serveWaiters hands AVAILABLE keys of p to its waiting Acquires, longest waiting
// first. There are waiters only while no key is free, so this leases what was just
// freed. A waiter is taken out of line only once a live key is in hand for it.
func (m *memory) serveWaiters(p *mpool, now int64) {
	for p.lane.Waiters.Len() > 0 && p.avail != nil && p.avail.len() > 0 {
		e := m.pickAvailable(p, now)
		if e == nil {
			return // dead keys only, so far: the expirer serves the waiters after them
		}
		w := p.lane.Waiters.Take()
		if w == nil {
			return
		}
		m.lease(e, now, int64(w.TTL), w.Holder)
		m.publish() // before the waiter can answer
		p.lane.Waiters.Serve(w, m.leasedRecord(e))
	}
}

// takeAvailable removes e from the AVAILABLE keys.
func (m *memory) takeAvailable(e *entry) {
	p := m.pools[e.pool]
	p.avail.remove(e)
	p.leave(e, Available)
	if p.avail.len() == 0 {
		p.availHorizon = 0 // none AVAILABLE: the bound can start afresh
	}
}

// remove deletes e from every structure.
func (m *memory) remove(e *entry) {
	p := m.pools[e.pool]
	p.count--
	switch e.state {
	case stateBlocked:
		m.endLease(e)
	case stateAvailable:
		m.takeAvailable(e)
	case stateCooling:
		m.endCooling(e)
	case stateQuarantined:
		p.leave(e, Quarantined)
		p.quarantined--
	}
	switch e.keep {
	case keepPool:
		m.keepAlive.remove(e)
	case keepOwn:
		m.keepOwn.remove(e)
	}
	if e.imported {
		n := keyNumber(e)
		delete(p.bySecret, m.imported[n].digest)
		delete(m.imported, n)
	}
	e.state, e.imported = stateFree, false
	p.unplace(e)
	m.slab.release(e)
	if p.count == 0 {
		p.empty()
	}
}

// settle applies e's due transitions, in deadline order, and reports whether e still
// exists. A hold and a keep-alive that end at the same instant end with the key. A
// lease that ran out may start a cool-down that has ended too: at most two steps.
func (m *memory) settle(e *entry, now int64) bool {
	for e.holdIndex >= 0 && e.deadline[holdDeadline] <= now && e.deadline[holdDeadline] < e.deadline[keepAliveDeadline] {
		m.endHold(e, now)
	}
	if e.deadline[keepAliveDeadline] <= now {
		m.expireKey(e, now)
		return false
	}
	return true
}

// endHold applies the end of e's hold, due at now: a lease that ran out, or a
// cool-down that ended.
func (m *memory) endHold(e *entry, now int64) {
	if e.state == stateCooling {
		m.recoverKey(e, now)
	} else {
		m.releaseLease(e, now)
	}
}

// releaseLease ends e's lease, which ran out: a failure, and the lock-delay of
// Options.ExpiredLeaseCooldown.
func (m *memory) releaseLease(e *entry, now int64) {
	deadline := e.deadline[holdDeadline]
	m.endLease(e)
	e.leasesExpired++
	m.emit(EventReleased, e, deadline)
	m.opts.Observer.Expired(EventReleased, time.Duration(now-deadline))
	m.afterLease(e, deadline, now, true, int64(m.opts.ExpiredLeaseCooldown))
}

// recoverKey returns e, whose cool-down ended, to AVAILABLE.
func (m *memory) recoverKey(e *entry, now int64) {
	deadline := e.deadline[holdDeadline]
	m.endCooling(e)
	m.emit(EventRecovered, e, deadline)
	m.opts.Observer.Expired(EventRecovered, time.Duration(now-deadline))
	m.makeAvailable(e, now)
}

// expireKey deletes e, which was not kept alive.
func (m *memory) expireKey(e *entry, now int64) {
	deadline := e.deadline[keepAliveDeadline]
	m.emit(EventExpired, e, deadline) // while e still holds the key's number
	m.remove(e)
	m.opts.Observer.Expired(EventExpired, time.Duration(now-deadline))
}

// nextDue returns the entry with the earliest deadline of all and which deadline it
// is; keep-alive first on a tie.
func (m *memory) nextDue() (*entry, int) {
	keep := m.keepAlive.first()
	if own := m.keepOwn.peek(); own != nil && (keep == nil || own.deadline[keepAliveDeadline] < keep.deadline[keepAliveDeadline]) {
		keep = own
	}
	hold := m.holds.peek()
	switch {
	case hold == nil && keep == nil:
		return nil, 0
	case hold == nil:
		return keep, keepAliveDeadline
	case keep == nil || hold.deadline[holdDeadline] < keep.deadline[keepAliveDeadline]:
		return hold, holdDeadline
	default:
		return keep, keepAliveDeadline
	}
}

// applyDue applies up to limit due transitions in deadline order and returns how many.
func (m *memory) applyDue(now int64, limit int) int {
	for done := 0; done < limit; done++ {
		e, which := m.nextDue()
		if e == nil || e.deadline[which] > now {
			return done
		}
		if which == holdDeadline {
			m.endHold(e, now)
			m.serveWaiters(m.pools[e.pool], now)
		} else {
			m.expireKey(e, now)
		}
	}
	return limit
}

// timerUntil returns a timer that fires at the timeline instant next, or nil and a
// nil channel when next is MaxInt64, which never comes.
func (m *memory) timerUntil(next int64) (clockwork.Timer, <-chan time.Time) {
	if next == math.MaxInt64 {
		return nil, nil
	}
	timer := m.clock.NewTimer(time.Duration(max(next-m.now(), 0)))
	return timer, timer.Chan()
}

// lockSettled takes the lock once no deadline is due, applying what is, and returns
// the time it settled at; after maxBatches batches it takes the lock as things stand.
// The work is done in expiry batches with the lock released between them, so a storm
// of due deadlines holds up no other request for more than one batch; it is work the
// expirer would otherwise do.
func (m *memory) lockSettled(maxBatches int) int64 {
	for batch := 1; ; batch++ {
		m.mu.Lock()
		now := m.now()
		if m.applyDue(now, expiryBatch) < expiryBatch || batch == maxBatches {
			return now
		}
		m.unlock()
		runtime.Gosched()
	}
}

// noteDeadline wakes the expirer if deadline comes before the one it sleeps until.
func (m *memory) noteDeadline(deadline int64) {
	if deadline < m.wakeAt {
		m.wakeAt = deadline
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// expireBatch is one lock hold of the expirer: it applies up to expiryBatch due
// transitions, in deadline order, serves the waiters, and returns how many it applied
// and the deadline to sleep until (MaxInt64 for none).
func (m *memory) expireBatch() (applied int, next int64) {
	m.mu.Lock()
	defer m.unlock()
	now := m.now()
	applied = m.applyDue(now, expiryBatch)
	for _, p := range m.waitedPools() {
		m.serveWaiters(p, now) // in case only dead keys were in the way before
	}
	next = math.MaxInt64
	if e, which := m.nextDue(); e != nil {
		next = e.deadline[which]
	}
	m.wakeAt = next
	if applied == expiryBatch {
		m.wakeAt = now // more is due: no kicks needed, we come straight back
	}
	return applied, next
}

// expire is the expirer: it sleeps until the earliest deadline (or a kick for an
// earlier one), then applies what is due in batches, letting requests in between.
func (m *memory) expire() {
	defer close(m.done)
	for {
		applied, next := m.expireBatch()
		busy := applied == expiryBatch

		if busy {
			select {
			case <-m.stop:
				return
			default:
				runtime.Gosched()
				continue
			}
		}
		timer, fired := m.timerUntil(next)
		select {
		case <-fired:
		case <-m.kick:
		case <-m.stop:
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case <-m.stop:
			return
		default:
		}
	}
}
