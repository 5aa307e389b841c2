package graph

import (
	"context"
	"runtime"
	"sync"

	"github.com/keypool/keypool/keystore"
)

// fanout delivers keyEvents subscriptions with a bounded number of workers, so that
// when delivering costs more CPU than the machine has, requests keep their cores and
// delivery yields: at most maxWorkers goroutines deliver at once, whatever the number
// of subscribers.
//
// Each subscription is Polled (keystore.SubscribeOptions): no goroutine of its own
// reads the ring. A worker takes a subscription that has something to deliver, reads
// up to maxTurnEvents of its events, encodes each once per distinct selection (plan),
// queues their frames on the connection and writes them in one write without waiting
// for the client (outbox.kick). A subscription that fell behind is thus served many
// frames in one write; one whose connection cannot take its frames at once waits
// for its connection to drain, holding no worker; one that falls out of the ring is
// cut with SLOW_CONSUMER by the hub, as a fed one is, and can resume with after. No
// event is dropped without that error, and publishers never wait for subscribers.
//
// Subscriptions with nothing to deliver sleep on the hub's wake-up of their event
// types (one channel per set of types, shared), watched by one goroutine per channel
// that wakes them all together; a subscription whose context ends is finished at
// once. Workers and watchers exist only while there is work or sleepers: with no
// subscription, the fan-out has no goroutine.
type fanout struct {
	maxWorkers int
	obs        FanoutObserver
	plans      *planSet

	mu       sync.Mutex
	ready    []*stream // FIFO of streams with work, from head
	head     int
	workers  int
	turns    []*turn // the buffers of workers that have ended, for the next ones
	sleeping map[<-chan struct{}]*sleepers
}

// maxTurnEvents bounds the events one turn of a worker delivers to one subscription
// (and maxTurnBytes their bytes: some 700 KiB of frames for the whole of KeyEvent), so that a subscription far behind (a replay) takes its
// turns with the others. A subscriber keeps up only if its turns bring it what was
// published in between: with many subscribers, a turn carries many events.
const maxTurnEvents = 4096

// maxBacklog is how much may wait for a subscriber's client before the fan-out reads
// no more for it: with one turn (maxTurnBytes) on top, what a stalled client holds.
const maxBacklog = 64 << 10

// FanoutWorkers is how many goroutines deliver events at most: half the cores the Go
// runtime uses, at least one, so that requests always have the other half.
func FanoutWorkers() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// FanoutObserver hears what event delivery does, for metrics. Its methods must be
// fast and safe for concurrent use.
type FanoutObserver interface {
	// FanoutWrote is called for each turn that queued frames (each an event) of
	// bytes in all for one subscription, to go out in one write: coalesced when
	// frames > 1.
	FanoutWrote(frames, bytes int)
	// FanoutEncoded is called for each event encoded for a selection.
	FanoutEncoded()
	// FanoutStalled is called when a subscription is left to wait for its client (its
	// connection could not take its frames at once, or has maxBacklog waiting),
	// holding no worker.
	FanoutStalled()
	// FanoutQueued is called with the change in subscriptions waiting for a worker.
	FanoutQueued(delta int)
}

type nopFanoutObserver struct{}

func (nopFanoutObserver) FanoutWrote(int, int) {}
func (nopFanoutObserver) FanoutEncoded()       {}
func (nopFanoutObserver) FanoutStalled()       {}
func (nopFanoutObserver) FanoutQueued(int)     {}

func newFanout(workers int, obs FanoutObserver) *fanout {
	if obs == nil {
		obs = nopFanoutObserver{}
	}
	if workers <= 0 {
		workers = FanoutWorkers()
	}
	return &fanout{maxWorkers: workers, obs: obs, plans: newPlanSet(obs), sleeping: map[<-chan struct{}]*sleepers{}}
}

// sink is where a stream's frames go: a websocket operation, or an SSE response.
type sink interface {
	// backedUp reports whether the connection has more than maxBacklog bytes waiting
	// for its client; if so, w is told once it has drained.
	backedUp(w outboxWaiter) bool
	// deliver queues one frame for each payload, in order, and writes them without
	// waiting (outbox.kick): drained reports that all went out; if not, w is told
	// once they have. An error means nothing more can be delivered.
	deliver(payloads [][]byte, w outboxWaiter) (drained bool, bytes int, err error)
}

type streamState uint8

const (
	streamQueued   streamState = iota // in the ready queue
	streamRunning                     // a worker has it
	streamSleeping                    // waiting for the hub's wake-up
	streamBlocked                     // waiting for its connection to drain
	streamDone                        // over: done is closed
)

// streamEndReason says why a stream's delivery ended.
type streamEndReason uint8

const (
	// endSubscription: the subscription ended (cut, the store closed, or its context
	// ended); its Err says why, and the transport sends that as the stream's end.
	endSubscription streamEndReason = iota
	// endSink: the connection can take nothing more.
	endSink
)

// stream is one subscription delivered by the fan-out.
type stream struct {
	f    *fanout
	ctx  context.Context
	sub  *keystore.Subscription
	plan *plan
	sink sink

	state    streamState // under f.mu
	kicked   bool        // under f.mu: woken while running
	sleepers *sleepers   // under f.mu: while sleeping
	reason   streamEndReason
	stopCtx  func() bool
	done     chan struct{}
}

// turn is a worker's buffers for one turn.
type turn struct {
	events   []*keystore.Event
	payloads [][]byte
}

// sleepers are the streams sleeping on one wake-up channel.
type sleepers struct {
	wake    <-chan struct{}
	streams map[*stream]struct{}
	quit    chan struct{} // closed when the last sleeper leaves before the wake-up
}

// start delivers sub's events, encoded by plan (whose reference it takes), to sink
// until the subscription ends or sink fails; done is closed then.
func (f *fanout) start(ctx context.Context, sub *keystore.Subscription, p *plan, to sink) *stream {
	s := &stream{f: f, ctx: ctx, sub: sub, plan: p, sink: to, done: make(chan struct{})}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enqueueLocked(s)
	// Under the lock, after the enqueue: the end of ctx runs left on a goroutine of its
	// own (at once if ctx has ended), and left takes the lock first, so it finds s
	// queued and its stop function set.
	s.stopCtx = context.AfterFunc(ctx, s.left)
	return s
}

// wait waits for the stream's end and says why it ended.
func (s *stream) wait() streamEndReason {
	<-s.done
	return s.reason
}

func (f *fanout) enqueueLocked(s *stream) {
	s.state = streamQueued
	f.ready = append(f.ready, s)
	f.obs.FanoutQueued(1)
	if f.workers < f.maxWorkers {
		f.workers++
		go f.work()
	}
}

func (f *fanout) popLocked() *stream {
	for f.head < len(f.ready) {
		s := f.ready[f.head]
		f.ready[f.head] = nil
		f.head++
		if f.head == len(f.ready) {
			f.ready, f.head = f.ready[:0], 0
		}
		f.obs.FanoutQueued(-1)
		if s.state == streamQueued {
			return s
		}
	}
	return nil
}

// work serves ready streams until there are none.
func (f *fanout) work() {
	var t *turn
	for {
		f.mu.Lock()
		if t == nil {
			if n := len(f.turns); n > 0 {
				t, f.turns = f.turns[n-1], f.turns[:n-1]
			} else {
				t = &turn{events: make([]*keystore.Event, maxTurnEvents), payloads: make([][]byte, 0, maxTurnEvents)}
			}
		}
		s := f.popLocked()
		if s == nil {
			f.workers--
			f.turns = append(f.turns, t) // at most maxWorkers of them
			if len(f.ready) == 0 && cap(f.ready) > 1024 {
				f.ready = nil // a burst's queue is not kept
			}
			f.mu.Unlock()
			return
		}
		s.state = streamRunning
		s.kicked = false
		f.mu.Unlock()
		f.serve(s, t)
	}
}

// serve is one turn of a worker for s.
func (f *fanout) serve(s *stream, t *turn) {
	if s.ctx.Err() != nil {
		f.finish(s, endSubscription)
		return
	}
	if s.sink.backedUp(s) {
		// Its client is behind (other operations on its socket, or its own last turn):
		// read nothing more for it until it has caught up, so that what a stalled
		// client costs is bounded.
		f.obs.FanoutStalled()
		f.block(s)
		return
	}
	wake := s.sub.Wake() // before Read: a publish after it closes wake
	n, ended := s.sub.Read(t.events[:s.plan.turn])
	if n > 0 {
		payloads := t.payloads[:0]
		for _, ev := range t.events[:n] {
			payloads = append(payloads, s.plan.payload(ev))
		}
		clear(t.events[:n])
		drained, bytes, err := s.sink.deliver(payloads, s)
		clear(payloads)
		if err != nil {
			f.finish(s, endSink)
			return
		}
		f.obs.FanoutWrote(n, bytes)
		if !drained {
			f.obs.FanoutStalled()
			if ended {
				// What was queued goes out before the end, which the transport
				// queues behind it.
				f.finish(s, endSubscription)
				return
			}
			f.block(s)
			return
		}
	}
	if ended {
		f.finish(s, endSubscription)
		return
	}
	if n == s.plan.turn {
		f.mu.Lock()
		f.enqueueLocked(s) // more to read: behind the others
		f.mu.Unlock()
		return
	}
	f.sleep(s, wake)
}

// block leaves s waiting for its connection to drain (drained wakes it).
func (f *fanout) block(s *stream) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.kicked {
		f.enqueueLocked(s)
		return
	}
	s.state = streamBlocked
}

// sleep leaves s waiting for wake.
func (f *fanout) sleep(s *stream, wake <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-wake:
		s.kicked = true // published since Wake: no sleep
	default:
	}
	if s.kicked {
		f.enqueueLocked(s)
		return
	}
	z := f.sleeping[wake]
	if z == nil {
		z = &sleepers{wake: wake, streams: map[*stream]struct{}{}, quit: make(chan struct{})}
		f.sleeping[wake] = z
		go f.watch(z)
	}
	z.streams[s] = struct{}{}
	s.sleepers = z
	s.state = streamSleeping
}

// watch wakes every stream sleeping on z once its channel closes.
func (f *fanout) watch(z *sleepers) {
	select {
	case <-z.wake:
	case <-z.quit:
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sleeping[z.wake] == z {
		delete(f.sleeping, z.wake)
	}
	for s := range z.streams {
		s.sleepers = nil
		f.enqueueLocked(s)
	}
	z.streams = nil
}

// unsleepLocked takes s out of its sleepers; the last one out stops their watcher.
func (f *fanout) unsleepLocked(s *stream) {
	z := s.sleepers
	s.sleepers = nil
	delete(z.streams, s)
	if len(z.streams) == 0 && f.sleeping[z.wake] == z {
		delete(f.sleeping, z.wake)
		close(z.quit)
	}
}

// drained implements outboxWaiter: s's connection has taken what was queued.
func (s *stream) drained() {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	switch s.state {
	case streamRunning:
		s.kicked = true
	case streamBlocked:
		f.enqueueLocked(s)
	}
}

// stalled implements outboxWaiter: while s's client takes nothing, s still looks
// whether it has fallen out of the ring, so that it is cut (and counted) as soon as
// it has, rather than once its client reads again.
func (s *stream) stalled() { s.sub.Read(nil) }

// left is called when s's context ends: a stream that no worker has is finished at
// once; a running one at the end of its turn.
func (s *stream) left() {
	f := s.f
	f.mu.Lock()
	if s.state == streamRunning {
		s.kicked = true
		f.mu.Unlock()
		return
	}
	over := f.overLocked(s)
	f.mu.Unlock()
	if over {
		s.over(endSubscription)
	}
}

// finish ends the delivery of s, which the calling worker has.
func (f *fanout) finish(s *stream, reason streamEndReason) {
	f.mu.Lock()
	over := f.overLocked(s)
	f.mu.Unlock()
	if over {
		s.over(reason)
	}
}

// overLocked marks s done, and reports whether it was not already.
func (f *fanout) overLocked(s *stream) bool {
	switch s.state {
	case streamDone:
		return false
	case streamSleeping:
		f.unsleepLocked(s)
	}
	s.state = streamDone
	return true
}

// over ends s, which overLocked has marked done.
func (s *stream) over(reason streamEndReason) {
	s.stopCtx()
	s.reason = reason
	s.plan.release()
	close(s.done)
}
