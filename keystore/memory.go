package keystore

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// The two deadlines of an entry: leases are ordered by a heap (their TTLs differ),
// keep-alives by a queue (their TTL is the pool's).
const (
	leaseDeadline     = 0 // when a BLOCKED key's lease runs out
	keepAliveDeadline = 1 // when the key is deleted unless kept alive
)

// Bounds on the work of one lock hold.
const (
	// expiryBatch is how many due transitions the expirer applies before it lets
	// requests in; a storm of a million deadlines is a thousand short holds.
	expiryBatch = 1000
	// requestBatch is how many due transitions Acquire applies on its way in, so that
	// its picks reflect deadlines that passed since the expirer last ran.
	requestBatch = 32
	// statsBatches bounds the expiry batches one Stats applies before it answers: a
	// few milliseconds of work.
	statsBatches = 8
	// maxPicks bounds the random picks of one Acquire that land on keys whose
	// keep-alive deadline has passed (each such pick deletes that key).
	maxPicks = 64
)

// entry is one key. Times are nanoseconds on the store's monotonic timeline (see
// Memory.now). The layout is kept small: a million keys cost about 150 bytes each.
type entry struct {
	n            uint64   // the counter behind the key's id
	created      int64    // when generated
	deadline     [2]int64 // indexed by leaseDeadline, keepAliveDeadline
	acquiredAt   int64    // start of the current (or last) lease
	fence        int64    // fence of the current (or last) lease; its token derives from it
	older, newer *entry   // neighbours in the keep-alive queue
	leaseIndex   int32    // position in the lease heap; -1 unless BLOCKED
	availIndex   int32    // position in Memory.available; -1 unless AVAILABLE

	timesAcquired uint32
	leasesExpired uint32
}

func (e *entry) blocked() bool { return e.leaseIndex >= 0 }

// waiter is an Acquire waiting for a key.
type waiter struct {
	ctx  context.Context
	ttl  int64
	got  chan Key // buffered: the hand-off never blocks the store; closed if skipped
	elem *list.Element
}

// Memory is the in-memory Store: a map of keys, a slice of AVAILABLE keys for O(1)
// uniform picks, an indexed min-heap of lease deadlines and a queue of keep-alive
// deadlines. A background expirer sleeps
// until the earliest deadline and applies due transitions in bounded batches; every
// request also settles the deadlines of the key it touches, so it never sees a
// transition that is due but not yet applied.
type Memory struct {
	clock clockwork.Clock
	opts  Options
	ids   *IDCodec
	hub   *Hub
	base  time.Time // timeline origin: a reading of clock with the monotonic clock in it

	mu        sync.Mutex
	keys      map[uint64]*entry
	available []*entry
	leases    leaseHeap
	keepAlive keepAliveQueue
	lastKey   uint64
	lastFence int64
	waiters   list.List // of *waiter, first come first served
	wakeAt    int64     // the deadline the expirer sleeps until

	kick      chan struct{} // tells the expirer of a deadline earlier than wakeAt
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ Store = (*Memory)(nil)

// NewMemory returns an in-memory pool on clock (clockwork.NewRealClock() in
// production) and starts its expirer; Close stops it.
func NewMemory(clock clockwork.Clock, opts Options) (*Memory, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	ids, err := NewIDCodec(NewSecret())
	if err != nil {
		return nil, err
	}
	m := &Memory{
		clock:  clock,
		opts:   opts,
		ids:    ids,
		hub:    NewHub(opts.EventRetention, opts.Observer),
		base:   clock.Now(),
		keys:   make(map[uint64]*entry),
		wakeAt: math.MaxInt64,
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go m.expire()
	return m, nil
}

// Validate reports the first option that no pool can work with.
func (o Options) Validate() error {
	switch {
	case o.LeaseTTL <= 0:
		return fmt.Errorf("lease TTL must be positive, got %v", o.LeaseTTL)
	case o.KeepAliveTTL <= 0:
		return fmt.Errorf("keep-alive TTL must be positive, got %v", o.KeepAliveTTL)
	case o.MaxLeaseTTL < o.LeaseTTL:
		return fmt.Errorf("max lease TTL %v is shorter than the lease TTL %v", o.MaxLeaseTTL, o.LeaseTTL)
	case o.MaxGenerate < 1:
		return fmt.Errorf("max generate must be at least 1, got %d", o.MaxGenerate)
	case o.EventRetention < 1:
		return fmt.Errorf("event retention must be at least 1, got %d", o.EventRetention)
	}
	return nil
}

// now reads the clock as nanoseconds since base. Real clock readings carry the
// monotonic clock, so a jump of the wall clock moves no deadline.
func (m *Memory) now() int64 { return int64(m.clock.Now().Sub(m.base)) }

// at turns a timeline instant back into a time.Time.
func (m *Memory) at(t int64) time.Time { return m.base.Add(time.Duration(t)) }

// Generate implements Store.
func (m *Memory) Generate(ctx context.Context, count int) ([]Key, error) {
	if count < 1 || count > m.opts.MaxGenerate {
		return nil, Errorf(EINVALID, "count must be between 1 and %d, got %d", m.opts.MaxGenerate, count)
	}
	ids := make([]string, count)
	copies := make([]entry, count)
	m.mu.Lock()
	now := m.now()
	deadline := now + int64(m.opts.KeepAliveTTL)
	for i := range count {
		m.lastKey++
		e := &entry{
			n:          m.lastKey,
			created:    now,
			deadline:   [2]int64{0, deadline},
			leaseIndex: -1,
			availIndex: -1,
		}
		m.keys[e.n] = e
		m.keepAlive.pushBack(e)
		ids[i] = m.ids.KeyID(e.n)
		m.emit(EventGenerated, ids[i], now)
		m.makeAvailable(e)
		copies[i] = *e
	}
	m.noteDeadline(deadline)
	m.serveWaiters(now)
	m.mu.Unlock()

	keys := make([]Key, count)
	for i := range copies {
		keys[i] = m.snapshot(&copies[i], ids[i])
	}
	return keys, nil
}

// Acquire implements Store.
func (m *Memory) Acquire(ctx context.Context, opts AcquireOptions) (Key, error) {
	ttl, err := m.leaseTTL(opts.TTL)
	if err != nil {
		return Key{}, err
	}
	if opts.Wait < 0 || opts.Wait > MaxWait {
		return Key{}, Errorf(EINVALID, "wait must be between 0s and %v, got %v", MaxWait, opts.Wait)
	}
	m.mu.Lock()
	now := m.now()
	m.applyDue(now, requestBatch)
	e := m.pickAvailable(now)
	if e == nil && m.anyDue(now) {
		// The picks landed on dead keys, or a lease that ran out may free a key: help
		// the expirer until nothing is due, so that NOT_FOUND is never said while a
		// key is free.
		m.mu.Unlock()
		now = m.lockSettled(math.MaxInt)
		e = m.pickAvailable(now)
	}
	if e != nil {
		id := m.ids.KeyID(e.n)
		m.lease(e, id, now, ttl)
		e := *e
		m.mu.Unlock()
		return m.snapshot(&e, id), nil
	}
	if opts.Wait == 0 {
		m.mu.Unlock()
		return Key{}, Errorf(ENOTFOUND, "no key is available")
	}
	// The timer is armed before the waiter is counted, so that whoever sees the count
	// (a test moving a fake clock) moves the clock after the timer exists.
	start := m.clock.Now()
	timer := m.clock.NewTimer(opts.Wait)
	defer timer.Stop()
	w := &waiter{ctx: ctx, ttl: ttl, got: make(chan Key, 1)}
	w.elem = m.waiters.PushBack(w)
	m.opts.Observer.WaitersChanged(1)
	m.mu.Unlock()
	return m.wait(ctx, w, start, timer, opts.Wait)
}

// wait blocks until w is handed a key, its wait runs out, its client leaves or the
// store closes.
func (m *Memory) wait(ctx context.Context, w *waiter, start time.Time, timer clockwork.Timer, d time.Duration) (Key, error) {
	var err error
	select {
	case k := <-w.got:
		m.opts.Observer.Waited(m.clock.Since(start), true)
		return k, nil
	case <-timer.Chan():
		err = Errorf(ENOTFOUND, "no key became available within %v", d)
	case <-ctx.Done():
		err = ctx.Err()
	case <-m.stop:
		err = Errorf(EUNAVAILABLE, "the store is closing")
	}
	m.mu.Lock()
	queued := w.elem != nil
	if queued {
		m.dequeue(w)
	}
	m.mu.Unlock()
	if queued {
		m.opts.Observer.Waited(m.clock.Since(start), false)
		return Key{}, err
	}
	// The store took w out of line while we were leaving: with a key, or with none
	// because it saw that our client had gone.
	k, handed := <-w.got
	if !handed {
		m.opts.Observer.Waited(m.clock.Since(start), false)
		return Key{}, err
	}
	if ctx.Err() == nil && m.stopping() == nil {
		m.opts.Observer.Waited(m.clock.Since(start), true)
		return k, nil
	}
	// The client is gone: it never receives the key, which goes to the next in line.
	_, _ = m.Unblock(context.WithoutCancel(ctx), k.ID, k.Lease.Token)
	m.opts.Observer.Waited(m.clock.Since(start), false)
	return Key{}, err
}

func (m *Memory) stopping() error {
	select {
	case <-m.stop:
		return Errorf(EUNAVAILABLE, "the store is closing")
	default:
		return nil
	}
}

func (m *Memory) dequeue(w *waiter) {
	m.waiters.Remove(w.elem)
	w.elem = nil
	m.opts.Observer.WaitersChanged(-1)
}

// leaseTTL checks a requested lease TTL; zero means the default.
func (m *Memory) leaseTTL(ttl time.Duration) (int64, error) {
	if ttl == 0 {
		return int64(m.opts.LeaseTTL), nil
	}
	if ttl < MinLeaseTTL || ttl > m.opts.MaxLeaseTTL {
		return 0, Errorf(EINVALID, "ttl must be between %v and %v, got %v", MinLeaseTTL, m.opts.MaxLeaseTTL, ttl)
	}
	return int64(ttl), nil
}

// Unblock implements Store.
func (m *Memory) Unblock(ctx context.Context, id, token string) (Key, error) {
	return m.update(id, func(e *entry, now int64) error {
		if !e.blocked() {
			return Errorf(ENOTBLOCKED, "key %s is not blocked", ShortID(id))
		}
		if token != "" && !m.holds(e, token) {
			return Errorf(ELEASEMISMATCH, "token does not match the current lease of key %s", ShortID(id))
		}
		m.leases.remove(e)
		m.emit(EventUnblocked, id, now)
		m.makeAvailable(e)
		return nil
	})
}

// Renew implements Store.
func (m *Memory) Renew(ctx context.Context, id, token string, ttl time.Duration) (Key, error) {
	d, err := m.leaseTTL(ttl)
	if err != nil {
		return Key{}, err
	}
	return m.update(id, func(e *entry, now int64) error {
		if !e.blocked() {
			return Errorf(ENOTBLOCKED, "key %s is not blocked", ShortID(id))
		}
		if !m.holds(e, token) {
			return Errorf(ELEASEMISMATCH, "token does not match the current lease of key %s", ShortID(id))
		}
		e.deadline[leaseDeadline] = min(now+d, e.acquiredAt+int64(m.opts.MaxLeaseTTL))
		m.leases.fix(int(e.leaseIndex))
		m.noteDeadline(e.deadline[leaseDeadline])
		return nil
	})
}

// KeepAlive implements Store.
func (m *Memory) KeepAlive(ctx context.Context, id string) (Key, error) {
	return m.update(id, func(e *entry, now int64) error {
		e.deadline[keepAliveDeadline] = now + int64(m.opts.KeepAliveTTL)
		m.keepAlive.moveToBack(e)
		return nil
	})
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, id string) (Key, error) {
	return m.update(id, func(*entry, int64) error { return nil })
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, id string) error {
	_, err := m.update(id, func(e *entry, now int64) error {
		m.remove(e)
		m.emit(EventDeleted, id, now)
		return nil
	})
	return err
}

// update runs change on the live entry behind id under the lock, after settling its
// deadlines, and returns a snapshot of the entry as change left it.
func (m *Memory) update(id string, change func(e *entry, now int64) error) (Key, error) {
	n, ok := m.ids.ParseKeyID(id)
	if !ok {
		return Key{}, notFound(id)
	}
	m.mu.Lock()
	now := m.now()
	e := m.keys[n]
	if e == nil || !m.settle(e, id, now) {
		m.mu.Unlock()
		return Key{}, notFound(id)
	}
	if err := change(e, now); err != nil {
		m.mu.Unlock()
		return Key{}, err
	}
	copied := *e
	m.serveWaiters(now)
	m.mu.Unlock()
	return m.snapshot(&copied, id), nil
}

func notFound(id string) error { return Errorf(ENOTFOUND, "no key %s", ShortID(id)) }

// ShortID keeps enough of an id to follow it in messages and logs without repeating
// it whole (or repeating kilobytes of garbage sent as an id), quoted.
func ShortID(id string) string {
	const keep = 6
	if len(id) <= keep {
		return fmt.Sprintf("%q", id)
	}
	return fmt.Sprintf("%q", id[:keep]+"…")
}

// holds reports whether token names e's current lease.
func (m *Memory) holds(e *entry, token string) bool {
	fence, ok := m.ids.ParseToken(token)
	return ok && fence == e.fence
}

// Stats implements Store.
//
// Its counts include every transition due, unless more than statsBatches batches are
// due at once (an expiry storm): then it answers after those, without waiting for the
// rest, which the expirer finishes within the storm's drain time.
func (m *Memory) Stats(ctx context.Context) (Stats, error) {
	m.lockSettled(statsBatches)
	defer m.mu.Unlock()
	return Stats{
		Total:     len(m.keys),
		Available: len(m.available),
		Blocked:   m.leases.len(),
	}, nil
}

// Subscribe implements Store.
func (m *Memory) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	for _, t := range opts.Types {
		if !t.Valid() {
			return nil, Errorf(EINVALID, "unknown event type %q", t)
		}
	}
	if err := m.stopping(); err != nil {
		return nil, err
	}
	return m.hub.Subscribe(ctx, opts), nil
}

// Ready implements Store.
func (m *Memory) Ready(ctx context.Context) error { return m.stopping() }

// Close implements Store.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
		m.hub.Close()
	})
	return nil
}

// snapshot builds the client's view of a copy of an entry.
func (m *Memory) snapshot(e *entry, id string) Key {
	k := Key{
		ID:        id,
		Status:    Available,
		CreatedAt: m.at(e.created),
		ExpiresAt: m.at(e.deadline[keepAliveDeadline]),
		History: History{
			TimesAcquired: int64(e.timesAcquired),
			LeasesExpired: int64(e.leasesExpired),
		},
	}
	if e.timesAcquired > 0 {
		k.History.LastAcquiredAt = m.at(e.acquiredAt)
	}
	if e.blocked() {
		k.Status = Blocked
		k.Lease = &Lease{
			KeyID:      id,
			Token:      m.ids.Token(e.fence),
			Fence:      e.fence,
			AcquiredAt: m.at(e.acquiredAt),
			ExpiresAt:  m.at(e.deadline[leaseDeadline]),
		}
	}
	return k
}

// The transitions below run under m.mu.

func (m *Memory) emit(t EventType, id string, at int64) {
	m.hub.Publish(Event{Type: t, KeyID: id, At: m.at(at)})
}

// pickAvailable returns a uniformly random AVAILABLE key that is still alive,
// deleting the dead ones it lands on, or nil.
func (m *Memory) pickAvailable(now int64) *entry {
	for range maxPicks {
		if len(m.available) == 0 {
			return nil
		}
		e := m.available[rand.IntN(len(m.available))]
		if e.deadline[keepAliveDeadline] > now {
			return e
		}
		m.expireKey(e, now)
	}
	return nil
}

// lease blocks the AVAILABLE (or just released) entry e under a new lease.
func (m *Memory) lease(e *entry, id string, now, ttl int64) {
	if e.availIndex >= 0 {
		m.takeAvailable(e)
	}
	m.lastFence++
	e.fence = m.lastFence
	e.acquiredAt = now
	e.timesAcquired++
	e.deadline[leaseDeadline] = now + ttl
	m.leases.push(e)
	m.noteDeadline(e.deadline[leaseDeadline])
	m.emit(EventAcquired, id, now)
}

// makeAvailable puts e, no longer leased, among the AVAILABLE keys. Callers then
// serveWaiters, after taking their own snapshot: whoever freed the key must not see
// the next holder's token.
func (m *Memory) makeAvailable(e *entry) {
	e.availIndex = int32(len(m.available))
	m.available = append(m.available, e)
}

// serveWaiters hands AVAILABLE keys to waiting Acquires, longest waiting first. There
// are waiters only while no key is free, so this leases what was just freed.
func (m *Memory) serveWaiters(now int64) {
	for m.waiters.Len() > 0 && len(m.available) > 0 {
		w := m.waiters.Front().Value.(*waiter)
		m.dequeue(w)
		if w.ctx.Err() != nil {
			close(w.got) // its client left: no key for it
			continue
		}
		e := m.pickAvailable(now)
		if e == nil {
			return
		}
		id := m.ids.KeyID(e.n)
		m.lease(e, id, now, w.ttl)
		w.got <- m.snapshot(e, id)
	}
}

// takeAvailable removes e from the AVAILABLE slice: swap with the last, shrink.
func (m *Memory) takeAvailable(e *entry) {
	i, last := e.availIndex, len(m.available)-1
	moved := m.available[last]
	m.available[i] = moved
	moved.availIndex = i
	m.available[last] = nil
	m.available = m.available[:last]
	e.availIndex = -1
}

// remove deletes e from every structure.
func (m *Memory) remove(e *entry) {
	delete(m.keys, e.n)
	if e.blocked() {
		m.leases.remove(e)
	} else {
		m.takeAvailable(e)
	}
	m.keepAlive.remove(e)
}

// settle applies e's due transitions, in deadline order, and reports whether e still
// exists. A lease and a keep-alive that end at the same instant end with the key.
func (m *Memory) settle(e *entry, id string, now int64) bool {
	if e.blocked() && e.deadline[leaseDeadline] <= now && e.deadline[leaseDeadline] < e.deadline[keepAliveDeadline] {
		m.releaseLease(e, id, now)
	}
	if e.deadline[keepAliveDeadline] <= now {
		m.expireKey(e, now)
		return false
	}
	return true
}

// releaseLease returns e, whose lease ran out, to AVAILABLE.
func (m *Memory) releaseLease(e *entry, id string, now int64) {
	deadline := e.deadline[leaseDeadline]
	m.leases.remove(e)
	e.leasesExpired++
	m.hub.Publish(Event{Type: EventReleased, KeyID: id, At: m.at(deadline)})
	m.opts.Observer.Expired(EventReleased, time.Duration(now-deadline))
	m.makeAvailable(e)
}

// expireKey deletes e, which was not kept alive.
func (m *Memory) expireKey(e *entry, now int64) {
	deadline := e.deadline[keepAliveDeadline]
	m.remove(e)
	m.hub.Publish(Event{Type: EventExpired, KeyID: m.ids.KeyID(e.n), At: m.at(deadline)})
	m.opts.Observer.Expired(EventExpired, time.Duration(now-deadline))
}

// nextDue returns the entry with the earliest deadline of all and which deadline it
// is; keep-alive first on a tie.
func (m *Memory) nextDue() (*entry, int) {
	lease, keep := m.leases.peek(), m.keepAlive.front
	switch {
	case lease == nil && keep == nil:
		return nil, 0
	case lease == nil:
		return keep, keepAliveDeadline
	case keep == nil || lease.deadline[leaseDeadline] < keep.deadline[keepAliveDeadline]:
		return lease, leaseDeadline
	default:
		return keep, keepAliveDeadline
	}
}

// applyDue applies up to limit due transitions in deadline order and returns how many.
func (m *Memory) applyDue(now int64, limit int) int {
	for done := 0; done < limit; done++ {
		e, which := m.nextDue()
		if e == nil || e.deadline[which] > now {
			return done
		}
		if which == leaseDeadline {
			m.releaseLease(e, m.ids.KeyID(e.n), now)
			m.serveWaiters(now)
		} else {
			m.expireKey(e, now)
		}
	}
	return limit
}

// timerUntil returns a timer that fires at the timeline instant next (nil and a nil
// channel when next is MaxInt64, which never comes). A timer takes a duration, so a
// clock that moves between reading it and arming the timer (a test's fake clock
// advancing) would leave the timer late by that move: re-arm until the reading holds
// still, accepting after a few tries the sub-microsecond moves of a real clock.
func (m *Memory) timerUntil(next int64) (clockwork.Timer, <-chan time.Time) {
	if next == math.MaxInt64 {
		return nil, nil
	}
	for tries := 0; ; tries++ {
		before := m.now()
		timer := m.clock.NewTimer(time.Duration(max(next-before, 0)))
		if m.now() == before || tries == 2 {
			return timer, timer.Chan()
		}
		timer.Stop()
	}
}

// anyDue reports whether a deadline has passed that is not applied yet.
func (m *Memory) anyDue(now int64) bool {
	e, which := m.nextDue()
	return e != nil && e.deadline[which] <= now
}

// lockSettled takes the lock once no deadline is due, applying what is, and returns
// the time it settled at; after maxBatches batches it takes the lock as things stand.
// The work is done in expiry batches with the lock released between them, so a storm
// of due deadlines holds up no other request for more than one batch; it is work the
// expirer would otherwise do.
func (m *Memory) lockSettled(maxBatches int) int64 {
	for batch := 1; ; batch++ {
		m.mu.Lock()
		now := m.now()
		if m.applyDue(now, expiryBatch) < expiryBatch || batch == maxBatches {
			return now
		}
		m.mu.Unlock()
		runtime.Gosched()
	}
}

// noteDeadline wakes the expirer if deadline comes before the one it sleeps until.
func (m *Memory) noteDeadline(deadline int64) {
	if deadline < m.wakeAt {
		m.wakeAt = deadline
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// expire is the expirer: it sleeps until the earliest deadline (or a kick for an
// earlier one), then applies what is due in batches, letting requests in between.
func (m *Memory) expire() {
	defer close(m.done)
	for {
		m.mu.Lock()
		now := m.now()
		busy := m.applyDue(now, expiryBatch) == expiryBatch
		next := int64(math.MaxInt64)
		if e, which := m.nextDue(); e != nil {
			next = e.deadline[which]
		}
		m.wakeAt = next
		if busy {
			m.wakeAt = now // more is due: no kicks needed, we come straight back
		}
		m.mu.Unlock()

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
