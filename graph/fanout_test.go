package graph

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/keystore"
)

// fakeSink records what the fan-out delivers to one stream. A stalled sink takes
// frames but does not drain until released.
type fakeSink struct {
	busy, maxBusy *atomic.Int64 // deliveries in progress across sinks, and the most seen

	mu      sync.Mutex
	seqs    []int64
	turns   int
	stalled bool
	waiter  outboxWaiter
}

func (k *fakeSink) backedUp(outboxWaiter) bool { return false }

func (k *fakeSink) deliver(payloads [][]byte, w outboxWaiter) (bool, int, error) {
	n := k.busy.Add(1)
	for m := k.maxBusy.Load(); n > m && !k.maxBusy.CompareAndSwap(m, n); m = k.maxBusy.Load() {
	}
	defer k.busy.Add(-1)
	time.Sleep(50 * time.Microsecond) // a write's cost, so that turns overlap if they can
	k.mu.Lock()
	defer k.mu.Unlock()
	k.turns++
	size := 0
	for _, p := range payloads {
		// payloads are {"data":{"keyEvents":{"seq":N}}}
		seq, err := strconv.ParseInt(string(p[len(`{"data":{"keyEvents":{"seq":`):len(p)-3]), 10, 64)
		if err != nil {
			panic(string(p))
		}
		k.seqs = append(k.seqs, seq)
		size += len(p)
	}
	if k.stalled {
		k.waiter = w
		return false, size, nil
	}
	return true, size, nil
}

func (k *fakeSink) release() {
	k.mu.Lock()
	k.stalled = false
	w := k.waiter
	k.waiter = nil
	k.mu.Unlock()
	if w != nil {
		w.drained()
	}
}

func (k *fakeSink) got() []int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]int64(nil), k.seqs...)
}

// seqPlan is the plan of `keyEvents { seq }`.
func seqPlan(f *fanout) *plan {
	p := newPlan("seq", "keyEvents", []planField{{alias: "seq", value: fieldSeq}}, f.plans)
	p.refs = 1 << 20
	return p
}

func publishN(h *keystore.Hub, n int) {
	for i := range n {
		h.Publish(keystore.Event{Type: keystore.EventGenerated, KeyID: "k" + strconv.Itoa(i)})
	}
}

// TestFanoutBoundsWorkers: many streams, two workers: never more than two deliver at
// once, every stream gets every event in order, and a stream that fell behind is
// served many events per turn.
func TestFanoutBoundsWorkers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const streams, events = 50, 2000
	hub := keystore.NewHub(1<<14, nil)
	defer hub.Close()
	f := newFanout(2, nil)
	p := seqPlan(f)
	var busy, maxBusy atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sinks := make([]*fakeSink, streams)
	runs := make([]*stream, streams)
	for i := range sinks {
		sub, err := hub.Subscribe(ctx, keystore.SubscribeOptions{Polled: true})
		require.NoError(t, err)
		sinks[i] = &fakeSink{busy: &busy, maxBusy: &maxBusy}
		runs[i] = f.start(ctx, sub, p, sinks[i])
	}
	for range events / 100 {
		publishN(hub, 100)
		time.Sleep(time.Millisecond)
	}
	require.Eventually(t, func() bool {
		for _, k := range sinks {
			if len(k.got()) < events {
				return false
			}
		}
		return true
	}, 30*time.Second, time.Millisecond)
	for i, k := range sinks {
		got := k.got()
		require.Len(t, got, events, "stream %d", i)
		for j, seq := range got {
			require.EqualValues(t, j+1, seq, "stream %d", i)
		}
		require.Less(t, k.turns, events, "stream %d: some turns carried several events", i)
	}
	require.LessOrEqual(t, maxBusy.Load(), int64(2), "at most two workers deliver at once")
	cancel()
	requireEnded(t, f, runs)
}

// TestFanoutStalledSinkHoldsNoWorker: with one worker, a stream whose connection does
// not drain waits without the worker, the others keep getting events, and it is cut
// with SLOW_CONSUMER once it falls out of the ring, even while it waits (stalled).
func TestFanoutStalledSinkHoldsNoWorker(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hub := keystore.NewHub(64, nil)
	defer hub.Close()
	f := newFanout(1, nil)
	p := seqPlan(f)
	var busy, maxBusy atomic.Int64
	ctx := t.Context()
	sub, err := hub.Subscribe(ctx, keystore.SubscribeOptions{Polled: true})
	require.NoError(t, err)
	other, err := hub.Subscribe(ctx, keystore.SubscribeOptions{Polled: true})
	require.NoError(t, err)
	publishN(hub, 10) // before the first turns, so that the stuck stream's takes all ten
	stuck := &fakeSink{busy: &busy, maxBusy: &maxBusy, stalled: true}
	stuckRun := f.start(ctx, sub, p, stuck)
	fine := &fakeSink{busy: &busy, maxBusy: &maxBusy}
	fineRun := f.start(ctx, other, p, fine)

	require.Eventually(t, func() bool { return len(stuck.got()) == 10 && len(fine.got()) == 10 }, 10*time.Second, time.Millisecond)
	for i := range 10 { // far more than the ring holds; the stuck stream waits
		publishN(hub, 30)
		want := 10 + 30*(i+1)
		require.Eventually(t, func() bool { return len(fine.got()) == want }, 10*time.Second, time.Millisecond)
	}
	require.Len(t, stuck.got(), 10, "nothing more for a stream that waits for its connection")
	stuckWaiter := func() outboxWaiter { stuck.mu.Lock(); defer stuck.mu.Unlock(); return stuck.waiter }()
	require.NotNil(t, stuckWaiter)
	stuckWaiter.stalled() // what the outbox's flusher does while it waits for the client
	require.Equal(t, keystore.ESLOWCONSUMER, keystore.ErrorCode(sub.Err()), "cut while it waits")
	stuck.release()
	require.Equal(t, endSubscription, stuckRun.wait())
	require.Contains(t, sub.Err().Error(), "resume with after: 10")

	hub.Close()
	require.Equal(t, endSubscription, fineRun.wait())
	require.NoError(t, other.Err())
}

// TestFanoutLeavesAtOnce: a stream whose context ends is finished whether it sleeps,
// waits for a worker or waits for its connection.
func TestFanoutLeavesAtOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hub := keystore.NewHub(1024, nil)
	defer hub.Close()
	f := newFanout(1, nil)
	p := seqPlan(f)
	var busy, maxBusy atomic.Int64
	var runs []*stream
	var cancels []context.CancelFunc
	for i := range 30 {
		ctx, cancel := context.WithCancel(t.Context())
		sub, err := hub.Subscribe(ctx, keystore.SubscribeOptions{Polled: true, Types: []keystore.EventType{keystore.EventGenerated}})
		require.NoError(t, err)
		runs = append(runs, f.start(ctx, sub, p, &fakeSink{busy: &busy, maxBusy: &maxBusy, stalled: i%3 == 0}))
		cancels = append(cancels, cancel)
	}
	publishN(hub, 5)
	time.Sleep(10 * time.Millisecond)
	for _, cancel := range cancels {
		cancel()
	}
	requireEnded(t, f, runs)
}

// TestFanoutStartsOnAnEndedContext: a subscriber that leaves as its stream starts (its
// context ends before start returns) ends the stream cleanly. The end of the context
// used to run on a goroutine of its own that could read the stream's stop function
// before start had stored it: a data race, and a nil call that crashed the server.
func TestFanoutStartsOnAnEndedContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hub := keystore.NewHub(1024, nil)
	defer hub.Close()
	f := newFanout(2, nil)
	p := seqPlan(f)
	var busy, maxBusy atomic.Int64
	for range 200 {
		ctx, cancel := context.WithCancel(t.Context())
		sub, err := hub.Subscribe(ctx, keystore.SubscribeOptions{Polled: true})
		require.NoError(t, err)
		cancel()
		// The fan-out's lock is held while start runs, so that the context's end (on
		// its own goroutine) and start's own step under the lock contend for it.
		started := make(chan *stream)
		f.mu.Lock()
		go func() { started <- f.start(ctx, sub, p, &fakeSink{busy: &busy, maxBusy: &maxBusy}) }()
		runtime.Gosched()
		f.mu.Unlock()
		s := <-started
		require.Equal(t, endSubscription, s.wait())
	}
	require.Eventually(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.workers == 0 },
		10*time.Second, time.Millisecond)
}

// requireEnded waits for every run to end as a subscription ends, then for the fan-out
// to hold no worker and no watcher.
func requireEnded(t *testing.T, f *fanout, runs []*stream) {
	t.Helper()
	for _, s := range runs {
		require.Equal(t, endSubscription, s.wait())
	}
	require.Eventually(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.workers == 0 && len(f.sleeping) == 0 },
		10*time.Second, time.Millisecond, "no worker or watcher outlives the streams")
}
