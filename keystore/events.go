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
// when the subscriber fell further behind than the store retains.
type Subscription struct {
	C    <-chan Event
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
// goroutine. Publishing costs O(1) whatever the number of subscribers; a subscriber
// whose cursor falls out of the ring is cut with ESLOWCONSUMER.
type Hub struct {
	mu     sync.RWMutex // readers: subscribers copying out; writer: Publish
	ring   []Event      // ring[seq % len(ring)] holds event seq, for seq in [first, next)
	first  int64        // oldest retained seq
	next   int64        // seq the next event gets
	wake   chan struct{}
	woken  atomic.Bool // wake has waiters to close it for (set under the read lock)
	closed chan struct{}
	once   sync.Once
	obs    Observer
}

// NewHub returns a hub that retains the last retention events for replay.
func NewHub(retention int, obs Observer) *Hub {
	if obs == nil {
		obs = NopObserver{}
	}
	if retention < 1 {
		retention = DefaultEventRetention
	}
	return &Hub{
		ring:   make([]Event, retention),
		first:  1,
		next:   1,
		wake:   make(chan struct{}),
		closed: make(chan struct{}),
		obs:    obs,
	}
}

// Publish appends ev to the stream. A zero ev.Seq gets the next seq; a non-zero one
// (from a store that numbers events itself) must be larger than every seq before it,
// and events at or below the last seq are dropped as duplicates. It returns ev.Seq.
func (h *Hub) Publish(ev Event) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case ev.Seq == 0:
		ev.Seq = h.next
	case ev.Seq < h.next:
		return ev.Seq
	}
	if ev.Seq > h.next {
		// A gap (the first event of a store that numbers its own, or a reader that
		// lost some): the ring holds nothing before ev, so subscribers behind it are cut
		// rather than shown stale slots.
		h.first = ev.Seq
	}
	h.next = ev.Seq + 1
	h.ring[ev.Seq%int64(len(h.ring))] = ev
	if h.next-h.first > int64(len(h.ring)) {
		h.first = h.next - int64(len(h.ring))
	}
	if h.woken.Load() {
		close(h.wake)
		h.wake = make(chan struct{})
		h.woken.Store(false)
	}
	return ev.Seq
}

// LastSeq returns the seq of the newest event, 0 if none.
func (h *Hub) LastSeq() int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.next - 1
}

// Close ends every subscription; later Subscribe calls get a closed stream.
func (h *Hub) Close() {
	h.once.Do(func() { close(h.closed) })
}

// subscriberBatch bounds how many events a subscriber copies out of the ring per lock.
const subscriberBatch = 256

// Subscribe starts a subscription that lives until ctx ends, the hub closes or the
// subscriber falls behind the ring.
func (h *Hub) Subscribe(ctx context.Context, opts SubscribeOptions) *Subscription {
	out := make(chan Event, subscriberBatch)
	s := &Subscription{C: out, done: make(chan struct{})}
	h.mu.Lock()
	cursor := h.next
	if opts.After != nil {
		cursor = max(*opts.After+1, h.first)
		cursor = min(cursor, h.next)
	}
	h.mu.Unlock()
	h.obs.SubscribersChanged(1)
	go h.feed(ctx, s, out, cursor, opts.Types)
	return s
}

// feed copies events from the ring to out, batch by batch, until the subscription ends.
// While the client is not reading, each publish wakes it to check that the first event
// it has not delivered is still in the ring; once it is not, the subscription is cut.
func (h *Hub) feed(ctx context.Context, s *Subscription, out chan<- Event, cursor int64, types []EventType) {
	defer func() {
		h.obs.SubscribersChanged(-1)
		close(out)
		close(s.done)
	}()
	cut := func(undelivered int64) {
		s.err = Errorf(ESLOWCONSUMER, "subscriber fell more than %d events behind; resume with after: %d", len(h.ring), undelivered-1)
		h.obs.SlowConsumerCut()
	}
	batch := make([]Event, 0, subscriberBatch)
	for {
		h.mu.RLock()
		if cursor < h.first {
			h.mu.RUnlock()
			cut(cursor)
			return
		}
		batch = batch[:0]
		for ; cursor < h.next && len(batch) < subscriberBatch; cursor++ {
			if ev := h.ring[cursor%int64(len(h.ring))]; len(types) == 0 || slices.Contains(types, ev.Type) {
				batch = append(batch, ev)
			}
		}
		wake := h.wake
		h.woken.Store(true)
		caughtUp := cursor == h.next
		h.mu.RUnlock()

		for i := 0; i < len(batch); {
			select {
			case out <- batch[i]:
				i++
			case <-wake:
				h.mu.RLock()
				behind := batch[i].Seq < h.first
				wake = h.wake
				h.woken.Store(true)
				h.mu.RUnlock()
				if behind {
					cut(batch[i].Seq)
					return
				}
				caughtUp = false // events came while sending: read them before waiting
			case <-ctx.Done():
				return
			case <-h.closed:
				return
			}
		}
		if !caughtUp {
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
