package keystore

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

// waitElsewhere is the memory backend, except that while park is set an Acquire that
// may wait queues without looking for a key, as one waiting for keys that the free
// ones are not for would. It lets a test fill the bound on waiters while a key is free.
type waitElsewhere struct {
	Backend
	lanes *Lanes
	park  atomic.Bool
}

func (b *waitElsewhere) Acquire(ctx context.Context, pool string, ttl time.Duration, holder string, w *Waiter) (Record, error) {
	if w != nil && b.park.Load() {
		b.lanes.Made(pool).Waiters.Push(w)
		return Record{}, ErrNoKey
	}
	return b.Backend.Acquire(ctx, pool, ttl, holder, w)
}

type acquired struct {
	key Key
	err error
}

// TestMaxWaitersLeavesFreeKeys: with Options.MaxWaiters acquires waiting, one more
// that finds a key free is served, and one that would wait is refused at once with
// ETOOMANYWAITERS, changing nothing; once a waiter has gone, its place is free again.
func TestMaxWaitersLeavesFreeKeys(t *testing.T) {
	const bound = 2
	clock := clockwork.NewFakeClock()
	var backend *waitElsewhere
	p, err := NewPool(clock, Options{MaxWaiters: bound}, func(env Env) (Backend, *IDCodec, error) {
		b, ids, err := openMemory(clock)(env)
		backend = &waitElsewhere{Backend: b, lanes: env.Lanes}
		return backend, ids, err
	})
	require.NoError(t, err)
	defer p.Close()
	ctx := t.Context()
	free, err := p.Generate(ctx, "", 1)
	require.NoError(t, err)
	// The expirer's pass after Generate hands free keys to waiters: let it end (it then
	// sleeps on the clock) before any waiter queues beside the free key.
	require.NoError(t, clock.BlockUntilContext(ctx, 1))

	backend.park.Store(true)
	results := make(chan acquired, bound)
	for range bound {
		go func() {
			k, err := p.Acquire(ctx, AcquireOptions{Wait: 20 * time.Second})
			results <- acquired{k, err}
		}()
	}
	require.Eventually(t, func() bool { return p.waiting(DefaultPool) == bound }, 10*time.Second, time.Millisecond)
	backend.park.Store(false)

	// The clock never moves here: whatever answers, answers at once.
	k, err := p.Acquire(ctx, AcquireOptions{Wait: 10 * time.Second})
	require.NoError(t, err, "an acquire that finds a key free is never refused for the waiters")
	require.Equal(t, free[0].ID, k.ID)
	require.Equal(t, Blocked, k.Status)

	err = refusedAtOnce(t, p)
	require.Equal(t, ETOOMANYWAITERS, ErrorCode(err), "%v", err)
	_, err = p.Acquire(ctx, AcquireOptions{})
	require.Equal(t, ENOTFOUND, ErrorCode(err), "an acquire that does not wait is not the bound's business")
	stats, err := p.Stats(ctx, "")
	require.NoError(t, err)
	require.Equal(t, Stats{Total: 1, Blocked: 1, Waiting: bound}, stats, "the refusal changed the pool")
	require.Equal(t, bound, p.waiting(DefaultPool))
	got, err := p.Get(ctx, k.ID)
	require.NoError(t, err)
	require.Equal(t, k.Lease.Token, got.Lease.Token, "the refusal changed the lease")

	// The waiters' time runs out: their places are free again.
	clock.Advance(20 * time.Second)
	for range bound {
		r := <-results
		require.Equal(t, ENOTFOUND, ErrorCode(r.err), "%v", r.err)
	}
	require.Zero(t, p.waitSlots.Load())
	_, err = p.Unblock(ctx, k.ID, "")
	require.NoError(t, err)
	k, err = p.Acquire(ctx, AcquireOptions{Wait: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, free[0].ID, k.ID)
}

// refusedAtOnce runs an Acquire that would wait 10s, on a clock that does not move,
// and returns its error; it fails the test if the Acquire waits instead.
func refusedAtOnce(t *testing.T, p *Pool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := p.Acquire(ctx, AcquireOptions{Wait: 10 * time.Second})
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		cancel()
		<-done
		t.Fatal("the acquire waited: it was not refused")
		return nil
	}
}

// queued returns the waiters in line.
func (q *WaitQueue) queued() []*Waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	var ws []*Waiter
	for e := q.line.Front(); e != nil; e = e.Next() {
		ws = append(ws, e.Value.(*Waiter))
	}
	return ws
}

// requireCollected fails unless every waiter that ws points to has been collected:
// nothing the pool keeps holds on to a waiter that ended.
func requireCollected(t *testing.T, ws []weak.Pointer[Waiter]) {
	t.Helper()
	require.Eventually(t, func() bool {
		runtime.GC()
		for _, w := range ws {
			if w.Value() != nil {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "ended waiters are still reachable")
}

// TestEndedWaitersAreReleased: waiters that ended, however they ended (served, timed
// out, their client gone, refused past the bound, the server stopping), leave
// nothing behind: the line is empty, the counts are zero and every waiter is garbage.
func TestEndedWaitersAreReleased(t *testing.T) {
	const waiters = 300
	clock := clockwork.NewFakeClock()
	p, err := NewMemory(clock, Options{MaxWaiters: waiters})
	require.NoError(t, err)
	defer p.Close()
	q := p.lanes.Made(DefaultPool).Waiters
	ctx := t.Context()

	for round := range 3 { // the same again: nothing accumulates
		results := make(chan acquired, waiters)
		cancelOf := map[context.Context]context.CancelFunc{}
		for range waiters {
			wctx, cancel := context.WithCancel(ctx)
			cancelOf[wctx] = cancel
			go func() {
				k, err := p.Acquire(wctx, AcquireOptions{Wait: 20 * time.Second})
				results <- acquired{k, err}
			}()
		}
		require.Eventually(t, func() bool { return q.Len() == waiters }, 10*time.Second, time.Millisecond, "round %d", round)
		err := refusedAtOnce(t, p)
		require.Equal(t, ETOOMANYWAITERS, ErrorCode(err), "round %d: %v", round, err)
		var ended []weak.Pointer[Waiter]
		var leaving []context.CancelFunc
		for i, w := range q.queued() {
			ended = append(ended, weak.Make(w))
			if i >= waiters/3 && i < 2*waiters/3 {
				leaving = append(leaving, cancelOf[w.ctx])
			}
		}
		require.Len(t, ended, waiters)

		// The first third in line are served, the second leave, the rest time out.
		keys, err := p.Generate(ctx, "", waiters/3)
		require.NoError(t, err)
		for _, cancel := range leaving {
			cancel()
		}
		require.Eventually(t, func() bool { return q.Len() == waiters-2*(waiters/3) }, 10*time.Second, time.Millisecond)
		clock.Advance(20 * time.Second)
		served := 0
		for range waiters {
			r := <-results
			if r.err == nil {
				served++
				require.NoError(t, p.Delete(ctx, r.key.ID))
			}
		}
		require.Equal(t, len(keys), served, "round %d", round)
		for _, cancel := range cancelOf {
			cancel()
		}
		require.Zero(t, q.Len())
		require.Zero(t, q.line.Len())
		require.Zero(t, p.waitSlots.Load())
		requireCollected(t, ended)
	}

	// The server stops: the waiters are answered UNAVAILABLE and let go of too.
	results := make(chan acquired, waiters)
	for range waiters {
		go func() {
			k, err := p.Acquire(ctx, AcquireOptions{Wait: 20 * time.Second})
			results <- acquired{k, err}
		}()
	}
	require.Eventually(t, func() bool { return q.Len() == waiters }, 10*time.Second, time.Millisecond)
	var ended []weak.Pointer[Waiter]
	for _, w := range q.queued() {
		ended = append(ended, weak.Make(w))
	}
	p.StopWaiting()
	for range waiters {
		r := <-results
		require.Equal(t, EUNAVAILABLE, ErrorCode(r.err))
	}
	require.Zero(t, q.Len())
	require.Zero(t, q.line.Len())
	require.Zero(t, p.waitSlots.Load())
	requireCollected(t, ended)
}

// TestWaitQueueLetsGo: every way out of a WaitQueue (Join then Withdraw or Stay, Take
// then Serve or Return, leave, a client gone while in line) drops the queue's hold on
// the waiter.
func TestWaitQueueLetsGo(t *testing.T) {
	q := newWaitQueue(nil)
	ctx := t.Context()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	var ws []weak.Pointer[Waiter]
	track := func(w *Waiter) *Waiter { ws = append(ws, weak.Make(w)); return w }

	for range 100 {
		w := track(newWaiter(ctx, DefaultPool, time.Second, "")) // a try that found a key
		q.Join(w)
		q.Withdraw(w)

		w = track(newWaiter(gone, DefaultPool, time.Second, "")) // a try that found none, its client gone
		q.Join(w)
		stays, _ := q.Stay(w)
		require.False(t, stays)

		w = track(newWaiter(ctx, DefaultPool, time.Second, "")) // stays, is taken, returned, taken, served
		q.Join(w)
		stays, _ = q.Stay(w)
		require.True(t, stays)
		require.Same(t, w, q.Take())
		q.Return(w)
		require.Same(t, w, q.Take())
		q.Serve(w, Record{N: 1})
		<-w.got

		w = track(newWaiter(ctx, DefaultPool, time.Second, "")) // pushed, leaves
		q.Push(w)
		require.True(t, q.leave(w))

		w = track(newWaiter(ctx, DefaultPool, time.Second, "")) // taken, leaves meanwhile, returned: given up
		q.Push(w)
		require.Same(t, w, q.Take())
		require.False(t, q.leave(w))
		q.Return(w)
		_, ok := <-w.got
		require.False(t, ok)

		w = track(newWaiter(gone, DefaultPool, time.Second, "")) // its client left while in line
		q.Push(w)
		require.Nil(t, q.Take())
	}
	require.Zero(t, q.Len())
	require.Zero(t, q.line.Len())
	requireCollected(t, ws)
	runtime.KeepAlive(q) // the queue lives on: only the waiters may go
}
