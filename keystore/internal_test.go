package keystore

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

// TestAvailableSetInvariants runs random adds, removes, keep-alives, picks and clock
// jumps (some past the ring's whole span) against availableSet and checks, after each
// step, what picks rely on: every live key sits in a ring bucket or the far bucket
// (keys kept until deleted, or due beyond the ring's span), the tree counts the ring
// buckets exactly, and a pick returns only keys of the set.
func TestAvailableSetInvariants(t *testing.T) {
	const ttl = int64(time.Second)
	rng := rand.New(rand.NewPCG(1, 2))
	var s slab
	a := newAvailableSet(&s, ttl)
	members := map[slot]bool{}
	now := int64(0)
	epoch := int64(1) << a.shift
	for step := range 5000 {
		switch r := rng.IntN(100); {
		case r < 35: // a key comes: generated now, or unblocked with an older deadline
			e := s.alloc()
			e.deadline[keepAliveDeadline] = now + ttl - rng.Int64N(ttl+epoch) // a few already dead
			a.add(e, now)
			members[e.self] = true
		case r < 40: // an imported key comes: kept until deleted, or for a TTL longer than the ring's span
			e := s.alloc()
			e.deadline[keepAliveDeadline] = []int64{noDeadline, now + 10*ttl, now + ringAhead*ttl}[rng.IntN(3)]
			a.add(e, now)
			members[e.self] = true
		case r < 60 && len(members) > 0: // a key goes: leased, deleted or expired
			for i := range members {
				a.remove(s.get(i))
				delete(members, i)
				s.release(s.get(i))
				break
			}
		case r < 70 && len(members) > 0: // a keep-alive moves a key to the newest epoch
			for i := range members {
				e := s.get(i)
				a.remove(e)
				e.deadline[keepAliveDeadline] = now + ttl
				a.add(e, now)
				break
			}
		case r < 90:
			if e := a.pick(now); e != nil {
				require.True(t, members[e.self], "step %d: picked a key not in the set", step)
			}
		default: // time passes: within an epoch, past the TTL, or past the whole ring
			now += []int64{1, epoch, ttl, ringSize * epoch, 3 * ringSize * epoch}[rng.IntN(5)]
		}

		require.Equal(t, len(members), a.len(), "step %d", step)
		inRing := 0
		for pos, id := range a.ring {
			var n int32
			if id >= 0 {
				b := a.buckets[id]
				if b.pos != int32(pos) {
					t.Fatalf("step %d: bucket %d at %d says it is at %d", step, id, pos, b.pos)
				}
				n = int32(len(b.items))
				inRing += len(b.items)
			}
			if got := a.tree.sum(pos) - a.tree.sum(pos-1); got != n {
				t.Fatalf("step %d: the tree counts %d keys at %d, the bucket holds %d", step, got, pos, n)
			}
		}
		require.Equal(t, inRing, a.inRing, "step %d", step)
		for i := range members {
			e := s.get(i)
			b := a.buckets[e.availBucket]
			require.Equal(t, i, b.items[e.availIndex], "step %d", step)
			if e.deadline[keepAliveDeadline] > now && e.availBucket != a.far {
				require.GreaterOrEqual(t, b.pos, int32(0), "step %d: a live key is out of the ring and the far bucket", step)
			}
		}
	}
}

// sum returns the counts of positions 0..pos (0 when pos < 0), for the test.
func (f *fenwick) sum(pos int) int32 {
	var n int32
	for i := pos + 1; i > 0; i -= i & -i {
		n += f[i]
	}
	return n
}

// TestAcquireSkipsDeadKeys: with 100,000 dead AVAILABLE keys that the expirer has not
// reached (it is stopped here) and 10 live ones, Acquires find the live ones at once
// and leave the dead to the expirer: they delete no more than the dead keys their
// picks land on. A flat list of AVAILABLE keys made each of them drain the dead first.
func TestAcquireSkipsDeadKeys(t *testing.T) {
	const dead, live, acquires = 100_000, 10, 100
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	pool, err := NewMemory(clock, Options{})
	require.NoError(t, err)
	defer pool.Close()
	m := pool.backend.(*memory)
	require.NoError(t, m.Close()) // the expirer stops; the store still answers
	ctx := context.Background()
	for range dead / DefaultMaxGenerate {
		_, err := pool.Generate(ctx, "", DefaultMaxGenerate)
		require.NoError(t, err)
	}
	clock.Advance(DefaultKeepAliveTTL / 2)
	_, err = pool.Generate(ctx, "", live)
	require.NoError(t, err)
	clock.Advance(DefaultKeepAliveTTL/2 + time.Second) // the first keys are dead, epochs ago; the last alive
	for range acquires {
		k, err := pool.Acquire(ctx, AcquireOptions{})
		require.NoError(t, err)
		_, err = pool.Unblock(ctx, k.ID, k.Lease.Token)
		require.NoError(t, err)
	}
	m.mu.Lock()
	left := m.poolIndex[DefaultPool].count
	m.mu.Unlock()
	// Each Acquire may apply RequestBatch due transitions on its way in, and delete the
	// dead keys its picks land on.
	require.Greater(t, left, dead+live-acquires*(RequestBatch+MaxPicks), "the acquires drained the dead keys")
}

// TestKeyNumbersNeverRepeat: a key's id names its slot and the slot's generation, so
// the id of a deleted key must find nothing once its slot holds another key, and a slot
// whose generations have run out must never be used again.
func TestKeyNumbersNeverRepeat(t *testing.T) {
	pool, err := NewMemory(clockwork.NewFakeClock(), Options{})
	require.NoError(t, err)
	defer pool.Close()
	m := pool.backend.(*memory)
	ctx := context.Background()

	keys, err := pool.Generate(ctx, "", 1)
	require.NoError(t, err)
	old := keys[0].ID
	require.NoError(t, pool.Delete(ctx, old))
	keys, err = pool.Generate(ctx, "", 1)
	require.NoError(t, err)
	require.NotEqual(t, old, keys[0].ID)
	m.mu.Lock()
	require.Equal(t, slot(1), m.slab.used, "the slot was not reused")
	m.mu.Unlock()
	_, err = pool.Get(ctx, old)
	require.Equal(t, ENOTFOUND, ErrorCode(err), "the old id found the slot's new key")
	_, err = pool.Get(ctx, keys[0].ID)
	require.NoError(t, err)

	// The slot comes back once more, in its last generation, and is then retired.
	require.NoError(t, pool.Delete(ctx, keys[0].ID))
	m.mu.Lock()
	m.slab.get(0).gen = math.MaxUint32
	m.mu.Unlock()
	keys, err = pool.Generate(ctx, "", 1)
	require.NoError(t, err)
	require.NoError(t, pool.Delete(ctx, keys[0].ID))
	_, err = pool.Generate(ctx, "", 1)
	require.NoError(t, err)
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Equal(t, slot(2), m.slab.used, "a slot was used past its last generation")
}

// countWaiters counts what a WaitQueue tells its Observer.
type countWaiters struct {
	NopObserver
	n int
}

func (c *countWaiters) WaitersChanged(d int) { c.n += d }

// TestWaitQueueJoin: a waiter that joins is in line, in the order of arrival, while
// its backend tries for it: it counts in Len (the Observer hears of it only if it
// stays), and Take stops at it while it is first, serving no one behind it.
func TestWaitQueueJoin(t *testing.T) {
	ctx := context.Background()
	obs := &countWaiters{}
	q := newWaitQueue(obs)

	// A try that finds a key: the waiter leaves, unseen by the Observer.
	w := newWaiter(ctx, DefaultPool, time.Second, "")
	require.Equal(t, 0, q.Join(w))
	require.Equal(t, 1, q.Len())
	require.False(t, q.Withdraw(w), "no one to serve behind it")
	require.Equal(t, 0, q.Len())
	require.Equal(t, 0, obs.n)

	// Two tries that find none, the second's ending first.
	first, second := newWaiter(ctx, DefaultPool, time.Second, ""), newWaiter(ctx, DefaultPool, time.Second, "")
	require.Equal(t, 0, q.Join(first))
	require.Equal(t, 1, q.Join(second), "the second leaves a key to the first")
	require.Equal(t, 2, q.Len())
	stays, wake := q.Stay(second)
	require.True(t, stays)
	require.False(t, wake, "the second is not first")
	require.Equal(t, 1, obs.n)
	require.Nil(t, q.Take(), "the first is trying: no one behind it is served")
	stays, wake = q.Stay(first)
	require.True(t, stays)
	require.True(t, wake, "the first now waits to be served")
	require.Equal(t, 2, obs.n)
	require.Same(t, first, q.Take(), "arrival order, not the order the tries ended in")
	q.Serve(first, Record{N: 7})
	require.Equal(t, uint64(7), (<-first.got).N)
	require.Same(t, second, q.Take())
	q.Return(second)
	require.True(t, q.leave(second))
	require.Equal(t, 0, q.Len())
	require.Equal(t, 0, obs.n)

	// A waiter behind one that is trying, and a try that ends after its client left:
	// out of the queue, unseen, and the waiter behind it is next.
	behind := newWaiter(ctx, DefaultPool, time.Second, "")
	gone, cancel := context.WithCancel(ctx)
	w = newWaiter(gone, DefaultPool, time.Second, "")
	require.Equal(t, 0, q.Join(w))
	q.Push(behind)
	require.Nil(t, q.Take())
	cancel()
	stays, wake = q.Stay(w)
	require.False(t, stays)
	require.True(t, wake, "the waiter behind it is next")
	require.Equal(t, 1, q.Len())
	require.Equal(t, 1, obs.n)
	require.Same(t, behind, q.Take())
	q.Return(behind)
	require.True(t, q.leave(behind))
	require.Equal(t, 0, q.Len())
	require.Equal(t, 0, obs.n)

	// A try that finds a key, with a waiter behind it: that one is next.
	w, behind = newWaiter(ctx, DefaultPool, time.Second, ""), newWaiter(ctx, DefaultPool, time.Second, "")
	require.Equal(t, 0, q.Join(w))
	q.Push(behind)
	require.True(t, q.Withdraw(w), "the waiter behind it is next")
	require.Same(t, behind, q.Take())
	q.Return(behind)
	require.True(t, q.leave(behind))
	require.Equal(t, 0, q.Len())
	require.Equal(t, 0, obs.n)
}

// TestWaitGivenUpIsNoKey: a waiter the line gave up (its client left) answers with
// its context's error, never with the empty record of its closed channel as a key.
func TestWaitGivenUpIsNoKey(t *testing.T) {
	clock := clockwork.NewFakeClock()
	p, err := NewMemory(clock, Options{})
	require.NoError(t, err)
	defer p.Close()
	for range 200 { // the old select took the closed channel half the time
		ctx, cancel := context.WithCancel(t.Context())
		w := newWaiter(ctx, DefaultPool, time.Minute, "")
		waiters := p.lanes.Made(DefaultPool).Waiters
		waiters.Push(w)
		cancel()
		require.Nil(t, waiters.Take(), "a waiter whose client left is given up")
		key, err := p.wait(ctx, w, clock.NewTimer(time.Hour), time.Hour)
		require.ErrorIs(t, err, context.Canceled)
		require.Empty(t, key.ID)
	}
}

// TestCooldownStorm: a million cool-downs that end at one instant (every key of the
// pool unblocked with the same cool-down at the same instant) are applied in bounded
// batches, from the hold heap, like an expiry storm: a request applies at most
// RequestBatch of them on its way in and is served, Stats at most statsBatches expiry
// batches, and the expirer at most expiryBatch per lock hold, letting requests in
// between; every cool-down ends once.
func TestCooldownStorm(t *testing.T) {
	n := 1_000_000
	if raceDetector || testing.Short() {
		n = 100_000
	}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	pool, err := NewMemory(clock, Options{LeaseTTL: time.Hour, MaxLeaseTTL: time.Hour, KeepAliveTTL: 24 * time.Hour})
	require.NoError(t, err)
	defer pool.Close()
	m := pool.backend.(*memory)
	require.NoError(t, m.Close()) // the expirer stops: the test runs its batches itself
	ctx := context.Background()
	for made := 0; made < n; made += DefaultMaxGenerate {
		_, err := m.Generate(ctx, DefaultPool, DefaultMaxGenerate)
		require.NoError(t, err)
	}
	for range n {
		rec, err := m.Acquire(ctx, DefaultPool, time.Hour, "", nil)
		require.NoError(t, err)
		_, err = m.UnblockWith(ctx, rec.N, rec.Fence, time.Minute, false)
		require.NoError(t, err)
	}
	cooling := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.poolIndex[DefaultPool].cooling
	}
	require.Equal(t, n, cooling())
	require.Equal(t, n, len(m.holds.items), "every cool-down is in the hold heap")

	clock.Advance(time.Minute) // every cool-down ends now
	k, err := pool.Acquire(ctx, AcquireOptions{})
	require.NoError(t, err, "a request in the storm is served from what it applied")
	require.Equal(t, n-RequestBatch, cooling())
	_, err = pool.Unblock(ctx, k.ID, k.Lease.Token)
	require.NoError(t, err)
	s, err := pool.Stats(ctx, DefaultPool)
	require.NoError(t, err)
	require.Equal(t, n-RequestBatch-statsBatches*expiryBatch, s.Cooling, "Stats applied more than its batches")
	require.Equal(t, n, s.Total)

	holds, left := 0, s.Cooling
	for {
		applied, _ := m.expireBatch()
		require.LessOrEqual(t, applied, expiryBatch)
		holds++
		left -= applied
		if applied < expiryBatch {
			break
		}
		if holds%100 == 0 { // requests get in between the expirer's batches
			_, err := pool.Get(ctx, k.ID)
			require.NoError(t, err)
		}
	}
	require.Zero(t, left, "every cool-down ended once")
	require.Equal(t, (s.Cooling+expiryBatch)/expiryBatch, holds)
	s, err = pool.Stats(ctx, DefaultPool)
	require.NoError(t, err)
	require.Equal(t, Stats{Total: n, Available: n}, s)
	require.Empty(t, m.holds.items)
}
