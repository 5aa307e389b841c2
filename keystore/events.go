package keystore

import (
	"context"
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
type Subscription struct {
	C    <-chan *Event
	done chan struct{}
	err  error
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
type Hub struct {
	publish sync.Mutex // orders publishers; subscribers never take it
	ring    []atomic.Pointer[Event]
	first   atomic.Int64 // oldest retained seq
	next    atomic.Int64 // seq the next event gets
	wake    atomic.Pointer[chan struct{}]
	woken   atomic.Bool // a subscriber waits on wake: the next publish closes it
	closed  chan struct{}
	once    sync.Once
	obs     Observer
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
		ring:   make([]atomic.Pointer[Event], retention),
		closed: make(chan struct{}),
		obs:    obs,
	}
	h.first.Store(1)
	h.next.Store(1)
	wake := make(chan struct{})
	h.wake.Store(&wake)
	return h
}

// Publish appends ev to the stream. A zero ev.Seq gets the next seq; a non-zero one
// (from a store that numbers events itself) must be larger than every seq before it,
// and events at or below the last seq are dropped as duplicates. It returns ev.Seq.
func (h *Hub) Publish(ev Event) int64 {
	h.publish.Lock()
	defer h.publish.Unlock()
	next := h.next.Load()
	switch {
	case ev.Seq == 0:
		ev.Seq = next
	case ev.Seq < next:
		return ev.Seq
	}
	first := h.first.Load()
	if ev.Seq > next {
		// A gap (the first event of a store that numbers its own, or a reader that
		// lost some): the ring holds nothing before ev, so subscribers behind it are cut
		// rather than shown stale slots.
		first = ev.Seq
	}
	size := int64(len(h.ring))
	first = max(first, ev.Seq+1-size)
	h.first.Store(first)
	h.ring[ev.Seq%size].Store(&ev)
	h.next.Store(ev.Seq + 1)
	if h.woken.Load() && h.woken.CompareAndSwap(true, false) {
		wake := make(chan struct{})
		close(*h.wake.Swap(&wake))
	}
	return ev.Seq
}

// LastSeq returns the seq of the newest event, 0 if none.
func (h *Hub) LastSeq() int64 { return h.next.Load() - 1 }

// Close ends every subscription; later Subscribe calls get a closed stream.
func (h *Hub) Close() {
	h.once.Do(func() { close(h.closed) })
}

// subscriberBatch bounds how many events a subscriber copies out of the ring per lock.
const subscriberBatch = 256

// Subscribe starts a subscription that lives until ctx ends, the hub closes or the
// subscriber falls behind the ring.
func (h *Hub) Subscribe(ctx context.Context, opts SubscribeOptions) *Subscription {
	out := make(chan *Event, subscriberBatch)
	s := &Subscription{C: out, done: make(chan struct{})}
	cursor := h.next.Load()
	if opts.After != nil {
		cursor = min(max(*opts.After+1, h.first.Load()), cursor)
	}
	h.obs.SubscribersChanged(1)
	go h.feed(ctx, s, out, cursor, opts.Types)
	return s
}

// feed copies events from the ring to out, batch by batch, until the subscription ends.
// While the client is not reading, each publish wakes it to check that the first event
// it has not delivered is still in the ring; once it is not, the subscription is cut.
func (h *Hub) feed(ctx context.Context, s *Subscription, out chan<- *Event, cursor int64, types []EventType) {
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
		batch = batch[:0]
		for next := h.next.Load(); cursor < next && len(batch) < subscriberBatch; cursor++ {
			ev := h.ring[cursor%size].Load()
			if ev == nil || ev.Seq != cursor {
				cut(cursor)
				return
			}
			if len(types) == 0 || slices.Contains(types, ev.Type) {
				batch = append(batch, ev)
			}
		}

		// Arm the wake-up before looking for more, so that no publish falls between.
		wake := *h.wake.Load()
		h.woken.Store(true)
		for i := 0; i < len(batch); {
			select {
			case out <- batch[i]:
				i++
			case <-wake:
				if batch[i].Seq < h.first.Load() {
					cut(batch[i].Seq)
					return
				}
				wake = *h.wake.Load()
				h.woken.Store(true)
			case <-ctx.Done():
				return
			case <-h.closed:
				return
			}
		}
		if cursor < h.next.Load() {
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		case <-h.closed:
			return
		}
	}
}
