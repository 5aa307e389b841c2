package keystore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
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
	// EventCooled: the key went to COOLING. EventRecovered: its cool-down ended (the
	// store's own doing). EventQuarantined: it went to QUARANTINED. EventRestored:
	// Restore returned it to AVAILABLE. EventImported: Import made it.
	EventCooled      EventType = "COOLED"
	EventRecovered   EventType = "RECOVERED"
	EventQuarantined EventType = "QUARANTINED"
	EventRestored    EventType = "RESTORED"
	EventImported    EventType = "IMPORTED"
)

// EventTypes lists every event type.
var EventTypes = allTypes[:]

// Valid reports whether t is one of EventTypes.
func (t EventType) Valid() bool { return slices.Contains(EventTypes, t) }

// Event is one thing that happened to one key. Seq grows by one per event across the
// pool's stream of events, which Stream names.
type Event struct {
	Seq int64
	// Stream names the stream the event is part of: it changes when the pool's events
	// start again from seq 1 (an in-memory pool restarted, a Redis pool made anew).
	Stream string
	// Pool names the pool of the key, whose stream it is.
	Pool  string
	Type  EventType
	KeyID string
	// At is when it happened; for RELEASED, RECOVERED and EXPIRED (and a COOLED or
	// QUARANTINED that follows a RELEASED), the deadline that passed.
	At time.Time
	// Holder is the lease's holder, on an ACQUIRED event whose Acquire named one.
	Holder string
}

// HolderOrNull is Holder, or nil when there is none, for transports that show no
// holder as null.
func (e *Event) HolderOrNull() *string {
	if e.Holder == "" {
		return nil
	}
	return &e.Holder
}

// Subscription is one subscriber's reading of the pool's events: a cursor of its own
// in the hub's ring, moved by Read (or Next), with no goroutine of its own. Its one
// rule for being cut: a Read that finds an event of its types gone from the ring
// unread ends it with ESLOWCONSUMER (events of other types that left do not count,
// however late it reads; what came before a gap in the seqs is unknown, so counts).
// It also ends when its context ends or the hub closes. The events are shared by every subscriber: never modify one.
type Subscription struct {
	hub  *Hub
	ctx  context.Context
	set  typeSet
	keys map[string]struct{} // nil: every key

	mu     sync.Mutex // Read, and the end, one at a time
	cursor int64      // the next seq to look at
	ended  bool
	err    error
	done   chan struct{} // closed at the end
	stop   func() bool   // stops watching ctx
}

// Err returns why the subscription ended, once Done is closed: nil when its context
// ended or the hub closed, an ESLOWCONSUMER *Error when it fell behind.
func (s *Subscription) Err() error {
	<-s.done
	return s.err
}

// Done is closed when the subscription has ended. A cut is found by Read, so Done is
// closed by a Read that finds it.
func (s *Subscription) Done() <-chan struct{} { return s.done }

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
// want wakes it not at all: a publish wakes only the sets that hold its type.
type Hub struct {
	publish sync.Mutex // orders publishers; subscribers never take it
	stream  string     // the stream's id; set before the first publish
	pool    string     // the pool whose stream it is
	// ring holds the retained events, by seq modulo its length. It starts small and
	// doubles, up to retention slots, as events fill it: a pool that has few events
	// costs few slots. A publisher copies the retained events into the larger ring
	// before it swaps it in and stores events there only, and a reader loads the ring
	// after the seq it reads up to, so it finds every event it may read.
	ring      atomic.Pointer[[]atomic.Pointer[slotEvent]]
	retention int64
	first     atomic.Int64 // oldest retained seq
	next      atomic.Int64 // seq the next event gets
	gapped    atomic.Int64 // the seq after the last gap: the events before it are unknown
	// lastOf is the seq of the newest event of each type (by typeIndex), set before
	// next moves past it.
	lastOf [len(allTypes)]atomic.Int64
	wakes  [(anyType + 1) / 64]atomic.Pointer[wakeBlock] // by typeSet, 64 sets a block
	// armedSets has the bit of each typeSet whose wake-up may be armed, so that a
	// publish looks at those only: a word per block of wakes, whatever the number of
	// subscribers. A bit is set after its wake-up is armed and cleared before it is
	// signalled.
	armedSets [(anyType + 1) / 64]atomic.Uint64
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
var allTypes = [...]EventType{
	EventGenerated, EventAcquired, EventUnblocked, EventReleased, EventDeleted, EventExpired,
	EventCooled, EventRecovered, EventQuarantined, EventRestored, EventImported,
}

// typeSet is a set of event types, a bit per typeIndex.
type typeSet uint16

const anyType typeSet = 1<<len(allTypes) - 1

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

// wakeBlock is a block of wake-ups, for 64 sets of types in a row.
type wakeBlock [64]wake

// arm arms the wake-up of set and returns its channel. The block of set's wake-up is
// made at its first arming: of the 2^len(allTypes) sets of types, a hub makes room
// only for those its subscribers use.
func (h *Hub) arm(set typeSet) <-chan struct{} {
	block := h.wakes[set>>6].Load()
	if block == nil {
		block = new(wakeBlock)
		for i := range block {
			ch := make(chan struct{})
			block[i].ch.Store(&ch)
		}
		if !h.wakes[set>>6].CompareAndSwap(nil, block) {
			block = h.wakes[set>>6].Load()
		}
	}
	select {
	case <-h.closed:
		return h.closed // Close may have signalled before the block was made
	default:
	}
	ch := block[set&63].arm()
	h.armedSets[set>>6].Or(1 << (set & 63))
	return ch
}

// NewHub returns a hub that retains the last retention events for replay.
func NewHub(retention int, obs Observer) *Hub {
	if obs == nil {
		obs = NopObserver{}
	}
	if retention < 1 {
		retention = DefaultEventRetention
	}
	h := &Hub{
		stream:    newStreamID(),
		retention: int64(retention),
		closed:    make(chan struct{}),
		obs:       obs,
	}
	ring := make([]atomic.Pointer[slotEvent], min(retention, initialRing))
	h.ring.Store(&ring)
	h.first.Store(1)
	h.next.Store(1)
	return h
}

// initialRing is the size of a new hub's ring.
const initialRing = 64

// slots returns the ring as it is now.
func (h *Hub) slots() []atomic.Pointer[slotEvent] { return *h.ring.Load() }

// grow doubles the ring, up to retention slots, copying the retained events, whose
// seqs lie in first..next-1. The caller holds h.publish.
func (h *Hub) grow(first, next int64) []atomic.Pointer[slotEvent] {
	old := h.slots()
	ring := make([]atomic.Pointer[slotEvent], min(2*int64(len(old)), h.retention))
	for seq := first; seq < next; seq++ {
		ring[seq%int64(len(ring))].Store(old[seq%int64(len(old))].Load())
	}
	h.ring.Store(&ring)
	return ring
}

// newStreamID names a new stream: 128 random bits, URL-safe.
func newStreamID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Stream returns the id of the hub's stream of events.
func (h *Hub) Stream() string { return h.stream }

// SetStream names the hub's stream id, for a store whose events outlive the process
// (its pool's own id). It must be called before the first Publish and Subscribe.
func (h *Hub) SetStream(id string) { h.stream = id }

// Publish appends ev to the stream. A zero ev.Seq gets the next seq; a non-zero one
// (from a store that numbers events itself) must be larger than every seq before it,
// and events at or below the last seq are dropped as duplicates. It returns ev.Seq.
func (h *Hub) Publish(ev Event) int64 {
	h.publish.Lock()
	defer h.publish.Unlock()
	seq, ok := h.put(ev, new(slotEvent))
	if ok {
		h.wake(typeBit(ev.Type))
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
	var types typeSet
	for i, ev := range evs {
		h.put(ev, &slots[i])
		types |= typeBit(ev.Type)
	}
	h.wake(types)
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
	ring := h.slots()
	if ev.Seq-first >= int64(len(ring)) && int64(len(ring)) < h.retention {
		ring = h.grow(first, next)
	}
	first = max(first, ev.Seq+1-h.retention)
	h.first.Store(first)
	ev.Stream, ev.Pool = h.stream, h.pool
	e.ev = ev
	i := typeIndex(ev.Type)
	if i >= 0 {
		e.prevOfType = h.lastOf[i].Load()
	}
	ring[ev.Seq%int64(len(ring))].Store(e)
	if i >= 0 {
		h.lastOf[i].Store(ev.Seq)
	}
	h.next.Store(ev.Seq + 1)
	return ev.Seq, true
}

// wake signals the subscribers of every set that holds one of types.
func (h *Hub) wake(types typeSet) {
	for w := range h.armedSets {
		for sets := h.armedSets[w].Load(); sets != 0; sets &= sets - 1 {
			bit := bits.TrailingZeros64(sets)
			if typeSet(w<<6|bit)&types == 0 {
				continue
			}
			h.armedSets[w].And(^(1 << bit))
			h.wakes[w].Load()[bit].signal()
		}
	}
}

// LastSeq returns the seq of the newest event, 0 if none.
func (h *Hub) LastSeq() int64 { return h.next.Load() - 1 }

// Close ends every subscription; later Subscribe calls get a closed stream.
func (h *Hub) Close() {
	h.once.Do(func() {
		close(h.closed)
		// Subscribers sleep on the wake-ups: wake them to see the end.
		h.publish.Lock()
		defer h.publish.Unlock()
		for i := range h.wakes {
			if block := h.wakes[i].Load(); block != nil {
				for j := range block {
					block[j].signal()
				}
			}
		}
	})
}

// Subscribe starts a subscription that lives until ctx ends, the hub closes or the
// subscriber falls behind the ring. With opts.Stream naming another stream than the
// hub's it fails with ESTREAMCHANGED, naming the hub's; with opts.After older than
// the ring, with ECOMPACTED, naming the oldest retained seq.
func (h *Hub) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	if opts.Stream != "" && opts.Stream != h.stream {
		return nil, &Error{
			Code: ESTREAMCHANGED,
			Message: fmt.Sprintf("the stream of events has started again since: it is now %s; start over from its first event "+
				"(after: 0, stream: %q)", h.stream, h.stream),
			Stream: h.stream,
		}
	}
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
	s := &Subscription{hub: h, ctx: ctx, set: setOf(opts.Types), cursor: cursor, done: make(chan struct{})}
	if len(opts.Keys) > 0 {
		s.keys = make(map[string]struct{}, len(opts.Keys))
		for _, id := range opts.Keys {
			s.keys[id] = struct{}{}
		}
	}
	h.obs.SubscribersChanged(1)
	// No goroutine: the end of ctx ends the subscription from ctx's own (once stop is
	// set, if ctx has ended already).
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.endLocked(nil)
	})
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

// endLocked ends the subscription with err, once.
func (s *Subscription) endLocked(err error) {
	if s.ended {
		return
	}
	s.ended = true
	s.stop()
	s.err = err
	if err != nil {
		s.hub.obs.SlowConsumerCut()
	}
	s.hub.obs.SubscribersChanged(-1)
	close(s.done)
}

// Wake returns a channel that is closed once the subscription may have more to Read:
// when an event of its types is published, or when the hub closes. It is not closed
// when the subscription's context ends (Done is). Call Wake before Read, and wait on
// the channel only if Read found nothing: an event published in between closes it.
// Subscriptions of the same types share their channel.
func (s *Subscription) Wake() <-chan struct{} {
	return s.hub.arm(s.set)
}

// Read fills buf with the subscription's next events, in order, and returns how many
// it put there; it never waits. ended reports that the subscription is over, after
// the n events returned (deliver them first): Err then says why. With an empty buf,
// Read only looks whether the subscription has fallen behind (and is cut).
func (s *Subscription) Read(buf []*Event) (n int, ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return 0, true
	}
	h := s.hub
	select {
	case <-h.closed:
		s.endLocked(nil)
		return 0, true
	default:
	}
	next := h.next.Load()
	if s.set != anyType && h.newestOf(s.set) < s.cursor {
		s.cursor = next // nothing of ours in between: skip it unread
	}
	ring := h.slots() // after next: it holds every event before next
	for s.cursor < next {
		e := ring[s.cursor%int64(len(ring))].Load()
		if e == nil || e.ev.Seq != s.cursor {
			if s.set == anyType || !s.passGone() {
				s.endLocked(Errorf(ESLOWCONSUMER, "subscriber fell more than %d events behind; resume with after: %d", h.retention, s.cursor-1))
				return n, true
			}
			continue
		}
		if s.set.has(e.ev.Type) && s.wants(e.ev.KeyID) {
			if n == len(buf) {
				break
			}
			buf[n] = &e.ev
			n++
		}
		s.cursor++
	}
	return n, false
}

// wants reports whether the subscription follows the key id.
func (s *Subscription) wants(id string) bool {
	if s.keys == nil {
		return true
	}
	_, ok := s.keys[id]
	return ok
}

// passGone moves the cursor, which the ring has left behind, to the oldest retained
// event if no event of the subscription's types was among those that left, and
// reports whether it could. It follows each type's events back from the newest to
// the cursor: one that is no longer retained is lost. It costs what the subscriber
// has to read anyway, and happens at most once a lap.
func (s *Subscription) passGone() bool {
	h := s.hub
	first := h.first.Load()
	if s.cursor < h.gapped.Load() {
		return false // what came before a gap is unknown
	}
	for i := range allTypes {
		if s.set&(1<<i) == 0 {
			continue
		}
		seq := h.lastOf[i].Load()
		ring := h.slots() // after lastOf: it holds that event, if retained
		for seq >= s.cursor && seq > 0 {
			e := ring[seq%int64(len(ring))].Load()
			if seq < first || e == nil || e.ev.Seq != seq {
				return false
			}
			seq = e.prevOfType
		}
	}
	s.cursor = first
	return true
}

// Next waits for the subscription's next event, and returns it; once the subscription
// has ended (or ctx has), it returns nil and why (nil when it ended without an error).
func (s *Subscription) Next(ctx context.Context) (*Event, error) {
	var one [1]*Event
	for {
		wake := s.Wake()
		if n, ended := s.Read(one[:]); n == 1 {
			return one[0], nil
		} else if ended {
			return nil, s.Err()
		}
		select {
		case <-wake:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
