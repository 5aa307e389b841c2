// Package fanout delivers keyEvents subscriptions: each event is encoded once per
// distinct selection (a Plan) and the same bytes queued for every subscriber that
// wants them, a subscriber that is behind gets many events in one write, and only a
// few subscriptions encode and queue at once, so that requests keep the other cores
// whatever the number of subscribers.
//
// Delivery runs on the goroutine of the subscription's operation: it sleeps on the
// subscription's wake-up, takes a turn (one of a bounded number), reads, encodes and
// queues what is new on its Sink, gives the turn back, then flushes the sink, waiting
// for its client holding no turn. A subscriber whose client does not keep up falls
// behind the hub's ring and is cut with SLOW_CONSUMER at its next read.
package fanout

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/keypool/keypool/keystore"
)

// Sink is where one subscription's messages go.
type Sink interface {
	// Queue adds one message per payload (one response's JSON each) to what the next
	// Flush writes, without waiting for the client, and returns the bytes it queued.
	Queue(payloads [][]byte) (bytes int)
	// Flush writes what was queued within its write timeout. CPU work in proportion
	// to the messages (framing them, say) it does inside inTurn, which runs it in a
	// turn; while it waits for the client it calls stalled now and then (if it can),
	// so that a subscription that fell behind the ring is cut then, not once its
	// client reads again.
	Flush(inTurn func(func()), stalled func()) error
}

// Observer hears what delivery does, for metrics. Its methods must be fast and safe
// for concurrent use.
type Observer interface {
	FanoutWrote(frames, bytes int) // a flush of frames (an event each) to one subscriber
	FanoutEncoded()                // an event encoded for a selection
	FanoutStalled()                // a flush that waited more than stallAfter for its client
	FanoutQueued(delta int)        // the change in subscriptions waiting for a turn
}

// stallAfter is how long a flush may take before it counts as a stall: a client that
// takes what it is sent needs far less.
const stallAfter = 10 * time.Millisecond

type nopObserver struct{}

func (nopObserver) FanoutWrote(int, int) {}
func (nopObserver) FanoutEncoded()       {}
func (nopObserver) FanoutStalled()       {}
func (nopObserver) FanoutQueued(int)     {}

// Fanout delivers subscriptions. Its zero value is not usable: use New.
type Fanout struct {
	turns chan *turn // a turn's buffers; taking one is taking a turn
	plans *Plans
	obs   Observer
}

// turn holds the buffers of one turn: its events, and their payloads.
type turn struct {
	events   []*keystore.Event
	payloads [][]byte
}

// New returns a fan-out with at most workers turns at once, reporting to obs (nil:
// nothing). By default (workers not positive) that is half the cores the Go runtime
// uses, at least one, so that requests always have the other half.
func New(workers int, obs Observer) *Fanout {
	if obs == nil {
		obs = nopObserver{}
	}
	if workers <= 0 {
		workers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	f := &Fanout{turns: make(chan *turn, workers), plans: &Plans{plans: map[string]*Plan{}, obs: obs}, obs: obs}
	for range workers {
		f.turns <- &turn{events: make([]*keystore.Event, maxTurnEvents), payloads: make([][]byte, 0, maxTurnEvents)}
	}
	return f
}

// Plans returns the plans of the fan-out's subscriptions.
func (f *Fanout) Plans() *Plans { return f.plans }

// Deliver writes sub's events, encoded by p, to sink until the subscription ends (its
// Err says why), ctx ends, or the sink fails (that error is returned). It releases p.
func (f *Fanout) Deliver(ctx context.Context, sub *keystore.Subscription, p *Plan, sink Sink) error {
	defer p.Release()
	for {
		wake := sub.Wake() // before Read: a publish after it closes wake
		f.obs.FanoutQueued(1)
		var t *turn
		select {
		case t = <-f.turns:
			f.obs.FanoutQueued(-1)
		case <-ctx.Done():
			f.obs.FanoutQueued(-1)
			return nil
		}
		n, ended := sub.Read(t.events[:p.turn])
		payloads := t.payloads[:0]
		for _, ev := range t.events[:n] {
			payloads = append(payloads, p.Payload(ev))
		}
		clear(t.events[:n])
		size := 0
		if n > 0 {
			size = sink.Queue(payloads)
		}
		clear(payloads)
		f.turns <- t
		if n > 0 {
			start := time.Now()
			err := sink.Flush(f.inTurn, func() { sub.Read(nil) })
			if time.Since(start) > stallAfter {
				f.obs.FanoutStalled()
			}
			if err != nil {
				return err
			}
			f.obs.FanoutWrote(n, size)
		}
		switch {
		case ended:
			return nil
		case n == p.turn:
			continue // more to read, after the others' turns
		}
		select {
		case <-wake:
		case <-sub.Done():
		case <-ctx.Done():
			return nil
		}
	}
}

// maxIdleBuffer is the most buffer a sink keeps between flushes; larger ones go back
// to a pool of buffers shared by every sink, so that a saturated fan-out does not
// allocate a turn's worth of buffer for every flush.
const maxIdleBuffer = 64 << 10

var buffers sync.Pool

// Recycle returns b emptied for the next turn, or nil if it is larger than a sink
// keeps while idle (it then goes back to the pool).
func Recycle(b []byte) []byte {
	if cap(b) <= maxIdleBuffer {
		return b[:0]
	}
	b = b[:0]
	buffers.Put(&b)
	return nil
}

// Grow returns b with room for n more bytes, taking a pooled buffer for an empty one
// that has not.
func Grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	if len(b) == 0 {
		if p, ok := buffers.Get().(*[]byte); ok {
			if cap(*p) >= n {
				return *p
			}
			buffers.Put(p)
		}
	}
	return slices.Grow(b, n)
}

func (f *Fanout) inTurn(fn func()) {
	t := <-f.turns
	defer func() { f.turns <- t }()
	fn()
}
