package keystore_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/keystore"
)

// hubObserver counts what a hub reports.
type hubObserver struct {
	keystore.NopObserver
	subscribers atomic.Int64
	cuts        atomic.Int64
}

func (o *hubObserver) SubscribersChanged(delta int) { o.subscribers.Add(int64(delta)) }
func (o *hubObserver) SlowConsumerCut()             { o.cuts.Add(1) }

var hubTypes = []keystore.EventType{keystore.EventGenerated, keystore.EventAcquired, keystore.EventUnblocked}

// publish adds n events of rotating types and returns them as published.
func publish(h *keystore.Hub, n int) []keystore.Event {
	events := make([]keystore.Event, n)
	for i := range events {
		ev := keystore.Event{Type: hubTypes[i%len(hubTypes)], KeyID: fmt.Sprintf("key-%d", i), At: time.Unix(int64(i), 0)}
		ev.Seq, ev.Stream = h.Publish(ev), h.Stream()
		events[i] = ev
	}
	return events
}

// receive reads n events from sub, failing if they do not come in time.
func receive(t *testing.T, sub *keystore.Subscription, n int) []keystore.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got []keystore.Event
	for len(got) < n {
		ev, err := sub.Next(ctx)
		if ev == nil {
			t.Fatalf("got %d of %d events: %v", len(got), n, err)
		}
		got = append(got, *ev)
	}
	return got
}

// requireEnded reads sub to its end, dropping what is left in it.
func requireEnded(t *testing.T, sub *keystore.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		ev, err := sub.Next(ctx)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "the subscription did not end")
		if ev == nil {
			return
		}
	}
}

// subscribeHub subscribes to h, failing the test on an error.
func subscribeHub(t *testing.T, h *keystore.Hub, ctx context.Context, opts keystore.SubscribeOptions) *keystore.Subscription {
	t.Helper()
	sub, err := h.Subscribe(ctx, opts)
	require.NoError(t, err)
	return sub
}

func requireSilent(t *testing.T, sub *keystore.Subscription) {
	t.Helper()
	buf := make([]*keystore.Event, 1)
	n, ended := sub.Read(buf)
	require.Zero(t, n, "unexpected event %+v", buf[0])
	require.False(t, ended, "the subscription ended")
}

func TestHubOrdering(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := keystore.NewHub(1024, nil)
	defer h.Close()
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
	want := publish(h, 600) // more than one batch of the subscriber's copy loop
	for i, ev := range want {
		require.EqualValues(t, i+1, ev.Seq, "seq grows by one from 1")
	}
	require.Equal(t, want, receive(t, sub, len(want)))
	require.EqualValues(t, 600, h.LastSeq())
}

func TestHubConcurrentPublishers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := keystore.NewHub(1<<16, nil)
	defer h.Close()
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { publish(h, 2000) })
	}
	got := receive(t, sub, 8000)
	wg.Wait()
	for i, ev := range got {
		require.EqualValues(t, i+1, ev.Seq)
	}
}

func TestHubReplay(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := keystore.NewHub(8, nil)
	defer h.Close()
	history := publish(h, 6)
	after := func(seq int64) keystore.SubscribeOptions { return keystore.SubscribeOptions{After: &seq} }

	t.Run("from a retained seq, then live", func(t *testing.T) {
		sub := subscribeHub(t, h, t.Context(), after(3))
		require.Equal(t, history[3:], receive(t, sub, 3))
		requireSilent(t, sub)
		next := publish(h, 1)
		require.Equal(t, next, receive(t, sub, 1))
		history = append(history, next...)
	})
	t.Run("from the newest: live only", func(t *testing.T) {
		sub := subscribeHub(t, h, t.Context(), after(h.LastSeq()))
		requireSilent(t, sub)
		next := publish(h, 1)
		require.Equal(t, next, receive(t, sub, 1))
		history = append(history, next...)
	})
	t.Run("nil After: live only", func(t *testing.T) {
		sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
		requireSilent(t, sub)
		next := publish(h, 1)
		require.Equal(t, next, receive(t, sub, 1))
		history = append(history, next...)
	})
	t.Run("from beyond the newest: live", func(t *testing.T) {
		sub := subscribeHub(t, h, t.Context(), after(h.LastSeq()+100))
		requireSilent(t, sub)
		next := publish(h, 1)
		require.Equal(t, next, receive(t, sub, 1))
		history = append(history, next...)
	})
	t.Run("from the top of Int: live", func(t *testing.T) {
		sub := subscribeHub(t, h, t.Context(), after(math.MaxInt64))
		requireSilent(t, sub)
		next := publish(h, 1)
		require.Equal(t, next, receive(t, sub, 1))
		history = append(history, next...)
	})
	t.Run("from before the ring: refused, naming the oldest retained", func(t *testing.T) {
		require.Len(t, history, 11) // three more than the ring holds
		oldest := history[3].Seq
		for _, seq := range []int64{0, 1, oldest - 2} {
			_, err := h.Subscribe(t.Context(), after(seq))
			require.Equal(t, keystore.ECOMPACTED, keystore.ErrorCode(err), "after %d: %v", seq, err)
			var kerr *keystore.Error
			require.ErrorAs(t, err, &kerr)
			require.Equal(t, oldest, kerr.OldestSeq)
			require.Contains(t, kerr.Message, fmt.Sprintf("the oldest retained is seq %d", oldest))
		}
		// Just before the oldest retained: exactly what the ring holds, no gap.
		sub := subscribeHub(t, h, t.Context(), after(oldest-1))
		require.Equal(t, history[3:], receive(t, sub, 8))
		requireSilent(t, sub)
	})
}

// TestHubNonMatchingCostsNothing publishes events that none of many subscribers wants:
// no subscriber is woken, so a publish does what it does with no subscribers at all
// (one allocation: the event). A wake-up costs a new channel.
func TestHubNonMatchingCostsNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := keystore.NewHub(1<<16, nil)
	defer h.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	expired := []keystore.EventType{keystore.EventExpired}
	var subs []*keystore.Subscription
	for range 500 {
		subs = append(subs, subscribeHub(t, h, ctx, keystore.SubscribeOptions{Types: expired}))
	}
	publish(h, 100) // every subscriber is asleep past its first look
	// AllocsPerRun counts every goroutine's allocations; the least of three runs leaves
	// out a stray one of another goroutine. A publish that woke subscribers would make
	// a new channel each time: at least 2 a publish.
	allocs := math.Inf(1)
	for range 3 {
		allocs = min(allocs, testing.AllocsPerRun(5000, func() {
			h.Publish(keystore.Event{Type: keystore.EventAcquired, KeyID: "k"})
		}))
	}
	require.Less(t, allocs, 1.5, "a publish that matches no subscriber woke some")

	// They still get what they asked for, after far more than a ring of others.
	publish(h, 3<<16)
	seq := h.Publish(keystore.Event{Type: keystore.EventExpired, KeyID: "gone"})
	for _, sub := range subs {
		got := receive(t, sub, 1)
		require.Equal(t, seq, got[0].Seq)
	}
	cancel()
	for _, sub := range subs {
		requireEnded(t, sub)
		require.NoError(t, sub.Err(), "a subscriber that had nothing to read fell behind")
	}
}

func TestHubTypes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := keystore.NewHub(64, nil)
	defer h.Close()
	zero := int64(0)
	replayed := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventAcquired}, After: &zero})
	live := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventAcquired, keystore.EventUnblocked}})
	all := publish(h, 30)
	var acquired, both []keystore.Event
	for _, ev := range all {
		switch ev.Type {
		case keystore.EventAcquired:
			acquired = append(acquired, ev)
			both = append(both, ev)
		case keystore.EventUnblocked:
			both = append(both, ev)
		}
	}
	require.Equal(t, acquired, receive(t, replayed, len(acquired)))
	require.Equal(t, both, receive(t, live, len(both)))
	requireSilent(t, replayed)
	requireSilent(t, live)
}

func TestHubOwnSeqs(t *testing.T) {
	h := keystore.NewHub(16, nil)
	defer h.Close()
	// A store that numbers its events (a shared one) hands its seqs through; repeats
	// from a second delivery are dropped.
	require.EqualValues(t, 41, h.Publish(keystore.Event{Seq: 41, Type: keystore.EventGenerated}))
	require.EqualValues(t, 42, h.Publish(keystore.Event{Seq: 42, Type: keystore.EventGenerated}))
	require.EqualValues(t, 42, h.Publish(keystore.Event{Seq: 42, Type: keystore.EventDeleted}))
	require.EqualValues(t, 42, h.LastSeq())
	// What came before 41 is not retained here.
	zero, forty := int64(0), int64(40)
	_, err := h.Subscribe(t.Context(), keystore.SubscribeOptions{After: &zero})
	require.Equal(t, keystore.ECOMPACTED, keystore.ErrorCode(err))
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{After: &forty})
	got := receive(t, sub, 2)
	require.EqualValues(t, 41, got[0].Seq)
	require.EqualValues(t, 42, got[1].Seq)
	require.Equal(t, keystore.EventGenerated, got[1].Type, "the duplicate did not replace the original")
	requireSilent(t, sub)
}

func TestHubSlowConsumer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const retention, bursts, burst = 64, 500, 10
	obs := &hubObserver{}
	h := keystore.NewHub(retention, obs)
	defer h.Close()
	slow := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
	keeper := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
	var kept atomic.Int64
	done := make(chan struct{})
	go func() { // keeps up: reads everything as it comes
		defer close(done)
		for {
			if ev, _ := keeper.Next(context.Background()); ev == nil {
				return
			}
			kept.Add(1)
		}
	}()
	start := time.Now()
	for i := range bursts {
		publish(h, burst)
		// The keeper catches up before the next burst, so it is never more than a
		// burst behind; the slow subscriber never reads.
		want := int64((i + 1) * burst)
		for kept.Load() < want && time.Since(start) < 10*time.Second {
			runtime.Gosched()
		}
	}
	require.EqualValues(t, bursts*burst, kept.Load(), "a subscriber that keeps up gets everything")

	// Its first read finds it cut: what it had not read left the ring.
	var got []keystore.Event
	for {
		ev, _ := slow.Next(t.Context())
		if ev == nil {
			break
		}
		got = append(got, *ev)
	}
	require.Less(t, len(got), bursts*burst, "the slow subscriber was not cut")
	for i := 1; i < len(got); i++ {
		require.Equal(t, got[i-1].Seq+1, got[i].Seq)
	}
	err := slow.Err()
	require.Equal(t, keystore.ESLOWCONSUMER, keystore.ErrorCode(err), "error: %v", err)
	require.EqualValues(t, 1, obs.cuts.Load(), "only the slow subscriber is cut")

	h.Close()
	<-done
	require.NoError(t, keeper.Err())
	require.Eventually(t, func() bool { return obs.subscribers.Load() == 0 }, 10*time.Second, time.Millisecond)
}

func TestHubClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	obs := &hubObserver{}
	h := keystore.NewHub(1<<10, obs)
	idle := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
	full := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{}) // never read before the close
	publish(h, 1000)
	_ = receive(t, idle, 1000)
	h.Close()
	requireEnded(t, idle)
	requireEnded(t, full)
	require.NoError(t, idle.Err())
	require.NoError(t, full.Err())
	h.Close()                                                            // twice is harmless
	late := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{}) // a closed stream, no error
	requireEnded(t, late)
	require.NoError(t, late.Err())
	require.Eventually(t, func() bool { return obs.subscribers.Load() == 0 }, 10*time.Second, time.Millisecond)
}

func TestHubContextEndsSubscription(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := keystore.NewHub(1<<14, nil) // holds every event below: nobody is cut
	defer h.Close()
	var subs []*keystore.Subscription
	var cancels []context.CancelFunc
	for i := range 20 {
		ctx, cancel := context.WithCancel(t.Context())
		subs = append(subs, subscribeHub(t, h, ctx, keystore.SubscribeOptions{}))
		cancels = append(cancels, cancel)
		if i%2 == 0 {
			publish(h, 300) // some subscribers end with events unread, some idle
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
	for _, sub := range subs {
		requireEnded(t, sub)
		require.NoError(t, sub.Err())
	}
	// goleak, deferred above, checks that no goroutine is left.
}

// pollAll reads a subscription as a worker would: Wake, Read, and wait on the
// wake-up only when Read found nothing. It returns what it read once the
// subscription ends or want events have come.
func pollAll(t *testing.T, sub *keystore.Subscription, want int) (got []keystore.Event, ended bool) {
	t.Helper()
	buf := make([]*keystore.Event, 100)
	timeout := time.After(10 * time.Second)
	for len(got) < want {
		wake := sub.Wake()
		n, end := sub.Read(buf)
		for _, ev := range buf[:n] {
			got = append(got, *ev)
		}
		if end {
			return got, true
		}
		if n == 0 {
			select {
			case <-wake:
			case <-timeout:
				t.Fatalf("polled %d of %d events", len(got), want)
			}
		}
	}
	return got, false
}

func TestHubRead(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	obs := &hubObserver{}
	h := keystore.NewHub(1024, obs)
	defer h.Close()
	ctx, cancel := context.WithCancel(t.Context())
	sub := subscribeHub(t, h, ctx, keystore.SubscribeOptions{})
	require.EqualValues(t, 1, obs.subscribers.Load())

	wake := sub.Wake()
	n, ended := sub.Read(make([]*keystore.Event, 10))
	require.Zero(t, n)
	require.False(t, ended)
	select {
	case <-wake:
		t.Fatal("woken with nothing published")
	case <-time.After(20 * time.Millisecond):
	}
	done := make(chan []keystore.Event)
	go func() {
		got, _ := pollAll(t, sub, 600)
		done <- got
	}()
	want := publish(h, 600) // many reads of 100, and wake-ups in between
	require.Equal(t, want, <-done)
	select {
	case <-wake:
	default:
		t.Fatal("a publish did not close the wake-up armed before it")
	}
	// One event read at a time, in order.
	publish(h, 2)
	one := make([]*keystore.Event, 1)
	n, _ = sub.Read(one)
	require.Equal(t, 1, n)
	require.EqualValues(t, 601, one[0].Seq)
	n, _ = sub.Read(one)
	require.Equal(t, 1, n)
	require.EqualValues(t, 602, one[0].Seq)

	cancel()
	requireEnded(t, sub)
	require.NoError(t, sub.Err())
	n, ended = sub.Read(one)
	require.Zero(t, n)
	require.True(t, ended)
	require.Eventually(t, func() bool { return obs.subscribers.Load() == 0 }, 10*time.Second, time.Millisecond)
}

// TestHubReadSkipsUnwanted: a subscriber of one type that reads only when
// woken is not cut by laps of events it does not want, and gets its own.
func TestHubReadSkipsUnwanted(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	obs := &hubObserver{}
	h := keystore.NewHub(64, obs)
	defer h.Close()
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventExpired}})
	done := make(chan []keystore.Event)
	go func() {
		got, _ := pollAll(t, sub, 3)
		done <- got
	}()
	var want []keystore.Event
	for range 3 {
		publish(h, 1000) // 15 laps of the ring, none of them EXPIRED
		ev := keystore.Event{Type: keystore.EventExpired, KeyID: "gone"}
		ev.Seq, ev.Stream = h.Publish(ev), h.Stream()
		want = append(want, ev)
		time.Sleep(time.Millisecond)
	}
	require.Equal(t, want, <-done)
	require.Zero(t, obs.cuts.Load())
}

// TestHubReadSlowConsumer: a subscriber that does not read is cut as soon as
// it looks (an empty Read), with the seq to resume after, and only once.
func TestHubReadSlowConsumer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	obs := &hubObserver{}
	h := keystore.NewHub(64, obs)
	defer h.Close()
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
	buf := make([]*keystore.Event, 10)
	publish(h, 10)
	n, ended := sub.Read(buf)
	require.Equal(t, 10, n)
	require.False(t, ended)
	publish(h, 100) // seq 11 leaves the ring
	n, ended = sub.Read(nil)
	require.Zero(t, n)
	require.True(t, ended)
	err := sub.Err()
	require.Equal(t, keystore.ESLOWCONSUMER, keystore.ErrorCode(err))
	require.Contains(t, err.Error(), "resume with after: 10")
	requireEnded(t, sub)
	n, ended = sub.Read(buf)
	require.Zero(t, n)
	require.True(t, ended)
	require.EqualValues(t, 1, obs.cuts.Load())
	require.Zero(t, obs.subscribers.Load())

}

// TestHubReadClose: Close wakes a parked subscriber, whose Read then ends.
func TestHubReadClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	obs := &hubObserver{}
	h := keystore.NewHub(64, obs)
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventDeleted}})
	wake := sub.Wake()
	n, ended := sub.Read(nil)
	require.Zero(t, n)
	require.False(t, ended)
	h.Close()
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake the parked subscriber")
	}
	_, ended = sub.Read(nil)
	require.True(t, ended)
	requireEnded(t, sub)
	require.NoError(t, sub.Err())
	require.Zero(t, obs.subscribers.Load())
}

// TestHubReadPassesWhatItDoesNotWant: a subscriber of some types that reads
// only after the ring has lapped it many times goes on if nothing of its types left
// the ring, and is cut if something did, or if what it missed is unknown (a gap).
func TestHubReadPassesWhatItDoesNotWant(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	obs := &hubObserver{}
	h := keystore.NewHub(64, obs)
	defer h.Close()
	expired := []keystore.EventType{keystore.EventExpired, keystore.EventDeleted}
	buf := make([]*keystore.Event, 10)

	passes := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Types: expired})
	loses := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Types: expired})
	publish(h, 10) // none of theirs
	n, ended := loses.Read(buf)
	require.Zero(t, n)
	require.False(t, ended)
	lost := h.Publish(keystore.Event{Type: keystore.EventDeleted, KeyID: "lost"})
	n, _ = passes.Read(buf) // passes reads it; loses does not
	require.Equal(t, 1, n)
	require.Equal(t, lost, buf[0].Seq)
	publish(h, 1000) // 15 laps, none of theirs, no Read in between
	want := h.Publish(keystore.Event{Type: keystore.EventExpired, KeyID: "gone"})
	n, ended = passes.Read(buf)
	require.False(t, ended, "cut for events it does not want")
	require.Equal(t, 1, n)
	require.Equal(t, want, buf[0].Seq)
	_, ended = loses.Read(buf)
	require.True(t, ended, "DELETED seq %d left the ring unread", lost)
	require.Equal(t, keystore.ESLOWCONSUMER, keystore.ErrorCode(loses.Err()))
	require.EqualValues(t, 1, obs.cuts.Load())

	// A gap (a store's own seqs jump): what it skipped may have been of its types.
	gapped := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Types: expired})
	h.Publish(keystore.Event{Seq: h.LastSeq() + 100, Type: keystore.EventGenerated})
	h.Publish(keystore.Event{Type: keystore.EventExpired})
	_, ended = gapped.Read(buf)
	require.True(t, ended)
	require.Equal(t, keystore.ESLOWCONSUMER, keystore.ErrorCode(gapped.Err()))
	_, ended = passes.Read(buf)
	require.True(t, ended, "behind the gap too")
}

// TestHubReadEndedContext: a subscription on a context that has ended ends.
func TestHubReadEndedContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	obs := &hubObserver{}
	h := keystore.NewHub(64, obs)
	defer h.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	sub := subscribeHub(t, h, ctx, keystore.SubscribeOptions{})
	requireEnded(t, sub)
	require.NoError(t, sub.Err())
	_, ended := sub.Read(nil)
	require.True(t, ended)
	require.Eventually(t, func() bool { return obs.subscribers.Load() == 0 }, 10*time.Second, time.Millisecond)
}

// TestHubStream: every event names the hub's stream; two hubs (a restarted server)
// have different ones; resuming another stream than the hub's is refused with
// STREAM_CHANGED naming the current one, and resuming its own is not.
func TestHubStream(t *testing.T) {
	h, restarted := keystore.NewHub(16, nil), keystore.NewHub(16, nil)
	defer h.Close()
	defer restarted.Close()
	require.NotEqual(t, h.Stream(), restarted.Stream())
	require.GreaterOrEqual(t, len(h.Stream()), 20)
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Stream: h.Stream()})
	publish(h, 1)
	require.Equal(t, h.Stream(), receive(t, sub, 1)[0].Stream)

	after := int64(5)
	_, err := restarted.Subscribe(t.Context(), keystore.SubscribeOptions{After: &after, Stream: h.Stream()})
	require.Equal(t, keystore.ESTREAMCHANGED, keystore.ErrorCode(err), "error: %v", err)
	var kerr *keystore.Error
	require.ErrorAs(t, err, &kerr)
	require.Equal(t, restarted.Stream(), kerr.Stream)

	h.SetStream("the-pool-id")
	require.Equal(t, "the-pool-id", h.Stream())
}

// TestHubKeys: a subscription of some keys gets their events only, of its types.
func TestHubKeys(t *testing.T) {
	h := keystore.NewHub(64, nil)
	defer h.Close()
	sub := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Keys: []string{"key-3", "key-7"}})
	all := publish(h, 10)
	require.Equal(t, []keystore.Event{all[3], all[7]}, receive(t, sub, 2))
	requireSilent(t, sub)
	typed := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{Keys: []string{"key-0", "key-1"}, Types: []keystore.EventType{keystore.EventAcquired}})
	again := publish(h, 3) // key-0 GENERATED, key-1 ACQUIRED, key-2 UNBLOCKED
	require.Equal(t, []keystore.Event{again[1]}, receive(t, typed, 1))
	requireSilent(t, typed)
}

// TestHubRingGrows: a hub's ring starts small and doubles as events come, up to its
// retention: a subscriber that lags across every growth still reads each event once,
// in order, and a replay reaches back the whole retention; one that falls more than
// the retention behind is cut, as with a ring made whole at the start.
func TestHubRingGrows(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const retention = 1000
	h := keystore.NewHub(retention, nil)
	defer h.Close()
	lagging := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{})
	want := publish(h, retention) // 64 slots, then 128, … 1000
	require.Equal(t, want, receive(t, lagging, retention))
	replay := subscribeHub(t, h, t.Context(), keystore.SubscribeOptions{After: new(int64)})
	require.Equal(t, want[:retention/2], receive(t, replay, retention/2), "a replay reaches back to the first event")

	publish(h, retention) // the replay's cursor is a retention and a half behind: gone
	buf := make([]*keystore.Event, 1)
	_, ended := replay.Read(buf[:0])
	require.True(t, ended)
	require.Equal(t, keystore.ESLOWCONSUMER, keystore.ErrorCode(replay.Err()))
	_, err := h.Subscribe(t.Context(), keystore.SubscribeOptions{After: new(int64)})
	require.Equal(t, keystore.ECOMPACTED, keystore.ErrorCode(err))
	got := receive(t, lagging, retention) // the other is a retention behind: all there
	require.EqualValues(t, retention+1, got[0].Seq)
}
