package fanout

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/keystore"
)

// fakeSink records what the fan-out delivers to one subscription.
type fakeSink struct {
	busy, maxBusy *atomic.Int64 // Queues in progress across sinks, and the most seen
	fail          error         // what Flush answers, if set

	mu      sync.Mutex
	queued  []int64
	seqs    []int64
	flushes int
}

func (k *fakeSink) Queue(payloads [][]byte) int {
	n := k.busy.Add(1)
	for m := k.maxBusy.Load(); n > m && !k.maxBusy.CompareAndSwap(m, n); m = k.maxBusy.Load() {
	}
	defer k.busy.Add(-1)
	time.Sleep(50 * time.Microsecond) // a turn's cost, so that turns overlap if they can
	k.mu.Lock()
	defer k.mu.Unlock()
	size := 0
	for _, p := range payloads {
		// payloads are {"data":{"keyEvents":{"seq":N}}}
		seq, err := strconv.ParseInt(string(p[len(`{"data":{"keyEvents":{"seq":`):len(p)-3]), 10, 64)
		if err != nil {
			panic(string(p))
		}
		k.queued = append(k.queued, seq)
		size += len(p)
	}
	return size
}

func (k *fakeSink) Flush(inTurn func(func()), _ func()) error {
	inTurn(func() {})
	k.mu.Lock()
	defer k.mu.Unlock()
	k.flushes++
	k.seqs = append(k.seqs, k.queued...)
	k.queued = nil
	return k.fail
}

func (k *fakeSink) got() []int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]int64(nil), k.seqs...)
}

// seqPlan is the plan of `keyEvents { seq }`.
func seqPlan(f *Fanout) *Plan {
	p := newPlan("seq", "keyEvents", []planField{{alias: "seq", value: eventFields["seq"]}}, f.plans)
	p.refs = 1 << 20
	return p
}

func publishN(h *keystore.Hub, n int) {
	for i := range n {
		h.Publish(keystore.Event{Type: keystore.EventGenerated, KeyID: "k" + strconv.Itoa(i)})
	}
}

// TestDeliverBoundsTurns: many subscriptions, two turns: never more than two encode and
// queue at once, every subscription gets every event in order, and one that fell
// behind is served many events per flush.
func TestDeliverBoundsTurns(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hub := keystore.NewHub(1<<16, nil)
	defer hub.Close()
	f := New(2, nil)
	var busy, maxBusy atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	const streams, events = 50, 2000
	sinks := make([]*fakeSink, streams)
	plan := seqPlan(f)
	var wg sync.WaitGroup
	for i := range sinks {
		sinks[i] = &fakeSink{busy: &busy, maxBusy: &maxBusy}
		sub, err := hub.Subscribe(ctx, keystore.SubscribeOptions{})
		require.NoError(t, err)
		wg.Go(func() { require.NoError(t, f.Deliver(ctx, sub, plan, sinks[i])) })
	}
	publishN(hub, events)
	for i, k := range sinks {
		require.Eventually(t, func() bool { return len(k.got()) == events }, 10*time.Second, time.Millisecond, "stream %d", i)
		for j, seq := range k.got() {
			require.EqualValues(t, j+1, seq)
		}
	}
	cancel()
	wg.Wait()
	require.LessOrEqual(t, maxBusy.Load(), int64(2), "more turns at once than the fan-out has")
	flushes := 0
	for _, k := range sinks {
		flushes += k.flushes
	}
	require.Less(t, flushes, streams*events/2, "events were not coalesced into flushes")
}

// TestDeliverEnds: delivery ends with its subscription's context (nil), with the
// subscription when it is cut (nil; Err says why), and with a sink that fails (that
// error), leaving nothing behind.
func TestDeliverEnds(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hub := keystore.NewHub(16, nil)
	defer hub.Close()
	f := New(1, nil)
	var busy, maxBusy atomic.Int64

	ctx, cancel := context.WithCancel(t.Context())
	sub, err := hub.Subscribe(ctx, keystore.SubscribeOptions{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- f.Deliver(ctx, sub, seqPlan(f), &fakeSink{busy: &busy, maxBusy: &maxBusy}) }()
	cancel()
	require.NoError(t, <-done)

	cut, err := hub.Subscribe(t.Context(), keystore.SubscribeOptions{})
	require.NoError(t, err)
	publishN(hub, 100) // past the ring before the first read
	require.NoError(t, f.Deliver(t.Context(), cut, seqPlan(f), &fakeSink{busy: &busy, maxBusy: &maxBusy}))
	require.Equal(t, keystore.ESLOWCONSUMER, keystore.ErrorCode(cut.Err()))

	broken := errors.New("the client is gone")
	sub, err = hub.Subscribe(t.Context(), keystore.SubscribeOptions{})
	require.NoError(t, err)
	go func() {
		done <- f.Deliver(t.Context(), sub, seqPlan(f), &fakeSink{busy: &busy, maxBusy: &maxBusy, fail: broken})
	}()
	publishN(hub, 1)
	require.ErrorIs(t, <-done, broken)
}

// TestPlansAreBoundedInBytes: a plan's cache and turns shrink with its payloads, so
// that a selection of many long aliases can neither take more than planCacheBytes
// with its cache nor queue a huge write in one turn.
func TestPlansAreBoundedInBytes(t *testing.T) {
	f := New(1, nil)
	small := newPlan("a", "keyEvents", []planField{{"seq", eventFields["seq"]}, {"type", eventFields["type"]}, {"keyId", eventFields["keyId"]}, {"at", eventFields["at"]}}, f.plans)
	require.Greater(t, small.turn, 1000, "a turn carries many events")
	require.LessOrEqual(t, small.turn*small.largest, maxTurnBytes)
	require.GreaterOrEqual(t, len(small.cache), 1<<14, "a ring's worth, or near it, for the usual selection")
	require.True(t, len(small.cache)*(small.largest+48) <= planCacheBytes, "its cache holds %d", len(small.cache))
	var fields []planField
	for i := range 200 { // the complexity limit's worth of 256-byte aliases
		fields = append(fields, planField{alias: fmt.Sprintf("%0256d", i), value: eventFields["keyId"]})
	}
	huge := newPlan("b", "keyEvents", fields, f.plans)
	require.Greater(t, huge.largest, 50_000)
	require.True(t, len(huge.cache)*(huge.largest+48) <= planCacheBytes, "its cache holds %d", len(huge.cache))
	require.Equal(t, maxTurnBytes/huge.largest, huge.turn)
	require.LessOrEqual(t, huge.turn*huge.largest, maxTurnBytes)
}
