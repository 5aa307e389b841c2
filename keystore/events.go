package keystore

import (
	"context"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// EventType names what happened to a key.
type EventType string

// The event types. RELEASED and EXPIRED are the store's own doing: a lease that ran
// out, and a key that was not kept alive.
const (
	EventGenerated EventType = "GENERATED"
	EventAcquired  EventType = "ACQUIRED"
	EventUnblocked EventType = "UNBLOCKED"
	EventReleased  EventType = "RELEASED"
	EventDeleted   EventType = "DELETED"
	EventExpired   EventType = "EXPIRED"
)

// EventTypes lists every event type.
var EventTypes = []EventType{EventGenerated, EventAcquired, EventUnblocked, EventReleased, EventDeleted, EventExpired}

// Valid reports whether t is one of EventTypes.
func (t EventType) Valid() bool { return slices.Contains(EventTypes, t) }

// Event is one thing that happened to one key. Seq grows by one per event across the pool.
type Event struct {
	Seq   int64
	Type  EventType
	KeyID string
	// At is when it happened; for RELEASED and EXPIRED, the deadline that passed.
	At time.Time
}

// Subscription is a live stream of events. C is closed when the stream ends; Err then
// tells why: nil when the subscriber left or the store closed, an ESLOWCONSUMER *Error
// when the subscriber fell further behind than the store retains. The events are
// shared by every subscriber: never modify one.
//
// A Polled subscription delivers nothing on C: its subscriber calls Read instead.
type Subscription struct {
	C    <-chan *Event
	done chan struct{}
	err  error
	poll *poller // nil unless Polled
}

// Err returns why the stream ended; call it after C is closed.
func (s *Subscription) Err() error {
	<-s.done
	return s.err
}

// Hub fans events out to subscribers without ever blocking a publisher: events go into
// a bounded ring, and each subscriber reads the ring with its own cursor in its own
// goroutine, taking no lock. Publishing costs O(1) whatever the number of subscribers;
// a subscriber whose cursor falls out of the ring is cut with ESLOWCONSUMER.
//
// Each slot holds a pointer to an immutable event. A publisher fills the slot, then
// moves next past it, so a reader that has seen next sees the slot filled; a slot that
// holds another seq than the reader expects has been overwritten: the reader fell
// behind the ring.
//
// A subscriber sleeps on the wake-up of its set of event types, so an event it does not
// want wakes it not at all: a publish wakes only the sets that hold its type. An idle
// subscriber also wakes once a lap (half the ring) to skip what it does not want
// before the ring overwrites it, and to see whether it fell behind while stalled.
// Polled subscriptions sleep on the same wake-ups of their types (Wake), and need no
// lap: each slot keeps the seq of its type's previous event, so a reader the ring has
// left behind can tell whether anything of its types left with it.
type Hub struct {
	publish sync.Mutex // orders publishers; subscribers never take it
	ring    []atomic.Pointer[slotEvent]
	first   atomic.Int64 // oldest retained seq
	next    atomic.Int64 // seq the next event gets
	gapped  atomic.Int64 // the seq after the last gap: the events before it are unknown
	// lastOf is the seq of the newest event of each type (by typeIndex), set before
	// next moves past it.
	lastOf [len(allTypes)]atomic.Int64
	wakes  [lapWake + 1]wake // by typeSet; lapWake once a lap
	// armedSets has the bit of each typeSet whose wake-up may be armed, so that a
	// publish looks at those only. A bit is set after its wake-up is armed and cleared
	// before it is signalled.
	armedSets atomic.Uint64
	lap       int64
	closed    chan struct{}
	once      sync.Once
	obs       Observer
}

// slotEvent is one slot's event, with the seq of the event of its type before it (0 if
// none), so that a subscriber of some types that the ring has left behind can tell
// whether any event of its types left with it.
type slotEvent struct {
	ev         Event
	prevOfType int64
}

// allTypes is EventTypes as an array, for the hub's tables.
var allTypes = [...]EventType{EventGenerated, EventAcquired, EventUnblocked, EventReleased, EventDeleted, EventExpired}

// typeSet is a set of event types, a bit per typeIndex.
type typeSet uint8

const (
	anyType typeSet = 1<<len(allTypes) - 1
	lapWake         = int(anyType) + 1
)

func typeIndex(t EventType) int {
	for i, at := range allTypes {
		if at == t {
			return i
		}
	}
	return -1
}

func (s typeSet) has(t EventType) bool {
	i := typeIndex(t)
	return i >= 0 && s&(1<<i) != 0
}

func setOf(types []EventType) typeSet {
	if len(types) == 0 {
		return anyType
	}
	var set typeSet
	for _, t := range types {
		set |= typeBit(t)
	}
	return set
}

// typeBit is the set of t alone; empty if t is no known type.
func typeBit(t EventType) typeSet {
	if i := typeIndex(t); i >= 0 {
		return 1 << i
	}
	return 0
}

// wake is a wake-up channel that the next publish closes if anyone armed it.
type wake struct {
	ch    atomic.Pointer[chan struct{}]
	armed atomic.Bool
}

func (w *wake) arm() <-chan struct{} {
	ch := *w.ch.Load()
	w.armed.Store(true)
	return ch
}

func (w *wake) signal() {
	if w.armed.Load() && w.armed.CompareAndSwap(true, false) {
		ch := make(chan struct{})
		close(*w.ch.Swap(&ch))
	}
}

// arm arms the wake-up of set and returns its channel.
func (h *Hub) arm(set typeSet) <-chan struct{} {
	ch := h.wakes[set].arm()
	h.armedSets.Or(1 << set)
	return ch
}

// setsHolding is, by set of types, the bits (as in armedSets) of every set that holds
// one of them.
var setsHolding = func() (t [anyType + 1]uint64) {
	for types := range anyType + 1 {
		for set := range anyType + 1 {
			if set&types != 0 {
				t[types] |= 1 << set
			}
		}
	}
	return t
}()

// NewHub returns a hub that retains the last retention events for replay.
func NewHub(retention int, obs Observer) *Hub {
	if obs == nil {
		obs = NopObserver{}
	}
	if retention < 1 {
		retention = DefaultEventRetention
	}
	h := &Hub{
		ring:   make([]atomic.Pointer[slotEvent], retention),
		lap:    max(int64(retention)/2, 1),
		closed: make(chan struct{}),
		obs:    obs,
	}
	h.first.Store(1)
	h.next.Store(1)
	for i := range h.wakes {
		ch := make(chan struct{})
		h.wakes[i].ch.Store(&ch)
	}
	return h
}

// Publish appends ev to the stream. A zero ev.Seq gets the next seq; a non-zero one
// (from a store that numbers events itself) must be larger than every seq before it,
// and events at or below the last seq are dropped as duplicates. It returns ev.Seq.
func (h *Hub) Publish(ev Event) int64 {
	h.publish.Lock()
	defer h.publish.Unlock()
	from := h.next.Load()
	seq, ok := h.put(ev, new(slotEvent))
	if ok {
		h.wake(typeBit(ev.Type), from, seq+1)
	}
	return seq
}

// PublishAll appends evs, each with a zero Seq, in order: as many Publish calls would,
// with one lock, one allocation and one round of wake-ups for them all.
func (h *Hub) PublishAll(evs []Event) {
	if len(evs) == 0 {
		return
	}
	h.publish.Lock()
	defer h.publish.Unlock()
	slots := make([]slotEvent, len(evs))
	from := h.next.Load()
	var types typeSet
	for i, ev := range evs {
		h.put(ev, &slots[i])
		types |= typeBit(ev.Type)
	}
	h.wake(types, from, h.next.Load())
}

// put stores ev in slot e of the ring and moves next past it; it reports false, and
// stores nothing, for a duplicate. The caller holds h.publish.
func (h *Hub) put(ev Event, e *slotEvent) (int64, bool) {
	next := h.next.Load()
	switch {
	case ev.Seq == 0:
		ev.Seq = next
	case ev.Seq < next:
		return ev.Seq, false
	}
	first := h.first.Load()
	if ev.Seq > next {
		// A gap (the first event of a store that numbers its own, or a reader that
		// lost some): the ring holds nothing before ev, so subscribers behind it are cut
		// rather than shown stale slots.
		first = ev.Seq
		h.gapped.Store(ev.Seq)
	}
	size := int64(len(h.ring))
	first = max(first, ev.Seq+1-size)
	h.first.Store(first)
	e.ev = ev
	i := typeIndex(ev.Type)
	if i >= 0 {
		e.prevOfType = h.lastOf[i].Load()
	}
	h.ring[ev.Seq%size].Store(e)
	if i >= 0 {
		h.lastOf[i].Store(ev.Seq)
	}
	h.next.Store(ev.Seq + 1)
	return ev.Seq, true
}

// wake signals the subscribers of every set that holds one of types, after seqs
// from..to-1 were published, and the lap wake-up if a seq of them ends a lap.
func (h *Hub) wake(types typeSet, from, to int64) {
	for sets := h.armedSets.Load() & setsHolding[types]; sets != 0; sets &= sets - 1 {
		set := bits.TrailingZeros64(sets)
		h.armedSets.And(^(1 << set))
		h.wakes[set].signal()
	}
	if (to-1)/h.lap != (from-1)/h.lap {
		h.wakes[lapWake].signal()
	}
}

// LastSeq returns the seq of the newest event, 0 if none.
func (h *Hub) LastSeq() int64 { return h.next.Load() - 1 }

// Close ends every subscription; later Subscribe calls get a closed stream.
func (h *Hub) Close() {
	h.once.Do(func() {
		close(h.closed)
		// Polled subscribers sleep on the wake-ups only: wake them to see the end.
		h.publish.Lock()
		defer h.publish.Unlock()
		for i := range h.wakes {
			h.wakes[i].signal()
		}
	})
}

// subscriberBatch bounds how many events a subscriber copies out of the ring at once.
const subscriberBatch = 256

// Subscribe starts a subscription that lives until ctx ends, the hub closes or the
// subscriber falls behind the ring. With opts.After older than the ring it fails with
// ECOMPACTED, naming the oldest retained seq.
func (h *Hub) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	next := h.next.Load()
	cursor := next
	if opts.After != nil && *opts.After < next-1 { // so that after+1 never overflows
		first := h.first.Load()
		if *opts.After+1 < first {
			return nil, &Error{
				Code: ECOMPACTED,
				Message: fmt.Sprintf("the events after seq %d are no longer retained: the oldest retained is seq %d; "+
					"resubscribe with after: %d or later, and reread what you need", *opts.After, first, first-1),
				OldestSeq: first,
			}
		}
		cursor = *opts.After + 1
	}
	if opts.Polled {
		return h.subscribePolled(ctx, cursor, setOf(opts.Types)), nil
	}
	out := make(chan *Event, subscriberBatch)
	s := &Subscription{C: out, done: make(chan struct{})}
	h.obs.SubscribersChanged(1)
	go h.feed(ctx, s, out, cursor, setOf(opts.Types))
	return s, nil
}

// newestOf returns the seq of the newest event of a type in set.
func (h *Hub) newestOf(set typeSet) int64 {
	var newest int64
	for i := range h.lastOf {
		if set&(1<<i) != 0 {
			newest = max(newest, h.lastOf[i].Load())
		}
	}
	return newest
}

// feed copies the events of set from the ring to out, batch by batch, until the
// subscription ends. While the client is not reading, it wakes once a lap to check
// that the first event it has not delivered is still in the ring; once it is not,
// the subscription is cut.
func (h *Hub) feed(ctx context.Context, s *Subscription, out chan<- *Event, cursor int64, set typeSet) {
	defer func() {
		h.obs.SubscribersChanged(-1)
		close(out)
		close(s.done)
	}()
	cut := func(undelivered int64) {
		s.err = Errorf(ESLOWCONSUMER, "subscriber fell more than %d events behind; resume with after: %d", len(h.ring), undelivered-1)
		h.obs.SlowConsumerCut()
	}
	size := int64(len(h.ring))
	batch := make([]*Event, 0, subscriberBatch)
	for {
		// Arm the wake-ups before looking, so that no publish falls between.
		wanted, lap := h.arm(set), h.wakes[lapWake].arm()
		next := h.next.Load()
		if set != anyType && h.newestOf(set) < cursor {
			cursor = next // nothing of ours in between: skip it unread
		}
		batch = batch[:0]
		for ; cursor < next && len(batch) < subscriberBatch; cursor++ {
			e := h.ring[cursor%size].Load()
			if e == nil || e.ev.Seq != cursor {
				cut(cursor)
				return
			}
			if set.has(e.ev.Type) {
				batch = append(batch, &e.ev)
			}
		}
		for i := 0; i < len(batch); {
			select {
			case out <- batch[i]:
				i++
			case <-lap:
				if batch[i].Seq < h.first.Load() {
					cut(batch[i].Seq)
					return
				}
				lap = h.wakes[lapWake].arm()
			case <-ctx.Done():
				return
			case <-h.closed:
				return
			}
		}
		if cursor < next {
			continue // the batch was full: more to read
		}
		select {
		case <-wanted:
		case <-lap:
		case <-ctx.Done():
			return
		case <-h.closed:
			return
		}
	}
}

// poller is a Polled subscription's own reading of the ring: the cursor its
// subscriber moves with Read, in place of a feed goroutine.
type poller struct {
	hub *Hub
	ctx context.Context
	set typeSet

	mu     sync.Mutex // Read, and the end, one at a time
	cursor int64      // the next seq to look at
	ended  bool
	out    chan *Event // C: closed at the end
	stop   func() bool // stops watching ctx
}

func (h *Hub) subscribePolled(ctx context.Context, cursor int64, set typeSet) *Subscription {
	out := make(chan *Event)
	p := &poller{hub: h, ctx: ctx, set: set, cursor: cursor, out: out}
	s := &Subscription{C: out, done: make(chan struct{}), poll: p}
	h.obs.SubscribersChanged(1)
	// No goroutine: the end of ctx ends the subscription from ctx's own (once stop is
	// set, if ctx has ended already).
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stop = context.AfterFunc(ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.endLocked(s, nil)
	})
	return s
}

// endLocked ends the subscription with err, once.
func (p *poller) endLocked(s *Subscription, err error) {
	if p.ended {
		return
	}
	p.ended = true
	p.stop()
	s.err = err
	if err != nil {
		p.hub.obs.SlowConsumerCut()
	}
	p.hub.obs.SubscribersChanged(-1)
	close(p.out)
	close(s.done)
}

// Polled reports whether the subscription is read with Read (SubscribeOptions.Polled).
func (s *Subscription) Polled() bool { return s.poll != nil }

// Wake returns a channel that is closed once a Polled subscription may have more to
// Read: when an event of its types is published, or when the hub closes. It is not
// closed when the subscription's context ends. Call Wake before Read, and wait on
// the channel only if Read found nothing: an event published in between closes it.
// Subscriptions of the same types share their channel, so one waiter can watch many.
func (s *Subscription) Wake() <-chan struct{} {
	return s.poll.hub.arm(s.poll.set)
}

// Read fills buf with a Polled subscription's next events, in order, and returns how
// many it put there; it never waits. ended reports that the subscription is over,
// after the n events returned (deliver them first): Err then says why. A subscriber
// whose next event has left the ring is cut here with ESLOWCONSUMER, as a fed one is,
// unless it subscribed to some types only and none of those left (then it goes on
// from the oldest retained event, however late it reads); with an empty buf, Read
// only looks for that, so that a subscriber that cannot take events (its client is
// stalled) is still cut as soon as it falls behind.
func (s *Subscription) Read(buf []*Event) (n int, ended bool) {
	p := s.poll
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return 0, true
	}
	h := p.hub
	select {
	case <-h.closed:
		p.endLocked(s, nil)
		return 0, true
	default:
	}
	if p.ctx.Err() != nil {
		p.endLocked(s, nil)
		return 0, true
	}
	next := h.next.Load()
	if p.set != anyType && h.newestOf(p.set) < p.cursor {
		p.cursor = next // nothing of ours in between: skip it unread
	}
	size := int64(len(h.ring))
	for p.cursor < next {
		e := h.ring[p.cursor%size].Load()
		if e == nil || e.ev.Seq != p.cursor {
			if p.set == anyType || !p.passGone(size) {
				p.endLocked(s, Errorf(ESLOWCONSUMER, "subscriber fell more than %d events behind; resume with after: %d", len(h.ring), p.cursor-1))
				return n, true
			}
			continue
		}
		if p.set.has(e.ev.Type) {
			if n == len(buf) {
				break
			}
			buf[n] = &e.ev
			n++
		}
		p.cursor++
	}
	return n, false
}

// passGone moves the cursor, which the ring has left behind, to the oldest retained
// event if no event of the subscription's types was among those that left, and
// reports whether it could. It follows each type's events back from the newest to
// the cursor: one that is no longer retained is lost. It costs what the subscriber
// has to read anyway, and happens at most once a lap.
func (p *poller) passGone(size int64) bool {
	h := p.hub
	first := h.first.Load()
	if p.cursor < h.gapped.Load() {
		return false // what came before a gap is unknown
	}
	for i := range allTypes {
		if p.set&(1<<i) == 0 {
			continue
		}
		for seq := h.lastOf[i].Load(); seq >= p.cursor && seq > 0; {
			e := h.ring[seq%size].Load()
			if seq < first || e == nil || e.ev.Seq != seq {
				return false
			}
			seq = e.prevOfType
		}
	}
	p.cursor = first
	return true
}
