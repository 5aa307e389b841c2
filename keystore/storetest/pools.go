package storetest

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

func (e *env) generateIn(pool string, count int) []keystore.Key {
	e.t.Helper()
	keys, err := e.store.Generate(e.ctx, pool, count)
	require.NoError(e.t, err)
	require.Len(e.t, keys, count)
	return keys
}

func (e *env) poolStats(pool string) keystore.Stats {
	e.t.Helper()
	s, err := e.store.Stats(e.ctx, pool)
	require.NoError(e.t, err)
	s.Waiting = 0
	return s
}

func idsOf(keys []keystore.Key) map[string]bool {
	ids := make(map[string]bool, len(keys))
	for _, k := range keys {
		ids[k.ID] = true
	}
	return ids
}

func testPools(t *testing.T, open Opener) {
	t.Run("keys belong to the pool they are made in; names are checked", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		a := e.generateIn("a", 2)
		d := e.generateIn("", 1)
		require.Equal(t, "a", a[0].Pool)
		require.Equal(t, keystore.DefaultPool, d[0].Pool)
		require.Equal(t, "a", e.get(a[1].ID).Pool)
		for _, bad := range []string{"-a", ".a", "a b", "a/b", "é", "a{b}", strings.Repeat("x", keystore.MaxPoolName+1)} {
			_, err := e.store.Generate(e.ctx, bad, 1)
			requireCode(t, err, keystore.EINVALID)
			_, err = e.store.Acquire(e.ctx, keystore.AcquireOptions{Pool: bad})
			requireCode(t, err, keystore.EINVALID)
			_, err = e.store.Stats(e.ctx, bad)
			requireCode(t, err, keystore.EINVALID)
			_, err = e.store.Subscribe(e.ctx, keystore.SubscribeOptions{Pool: bad})
			requireCode(t, err, keystore.EINVALID)
		}
		e.generateIn(strings.Repeat("x", keystore.MaxPoolName), 1)
		e.generateIn("0._-Z", 1)
		e.requireStats(5, 5, 0)
	})

	t.Run("an acquire takes keys of its pool only; stats and pools count each", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		a := idsOf(e.generateIn("a", 3))
		b := idsOf(e.generateIn("b", 2))
		for range 3 {
			k := e.acquire(keystore.AcquireOptions{Pool: "a"})
			require.True(t, a[k.ID], "pool a's acquire got %s", k.ID)
			require.Equal(t, "a", k.Pool)
		}
		_, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{Pool: "a"})
		requireCode(t, err, keystore.ENOTFOUND)
		_, err = e.store.Acquire(e.ctx, keystore.AcquireOptions{}) // the default pool has none
		requireCode(t, err, keystore.ENOTFOUND)
		_, err = e.store.Acquire(e.ctx, keystore.AcquireOptions{Pool: "never"})
		requireCode(t, err, keystore.ENOTFOUND)
		k := e.acquire(keystore.AcquireOptions{Pool: "b"})
		require.True(t, b[k.ID])

		require.Equal(t, keystore.Stats{Total: 3, Blocked: 3}, e.poolStats("a"))
		require.Equal(t, keystore.Stats{Total: 2, Available: 1, Blocked: 1}, e.poolStats("b"))
		require.Equal(t, keystore.Stats{}, e.poolStats("never"), "a pool never made counts zero")
		e.requireStats(5, 1, 4)
		pools, err := e.store.Pools(e.ctx)
		require.NoError(t, err)
		var names []string
		for _, p := range pools {
			names = append(names, p.Name)
		}
		require.Equal(t, []string{"a", "b", keystore.DefaultPool}, names, "ordered by name, the default pool always among them")
		require.Equal(t, 3, pools[0].Stats.Blocked)
		require.Equal(t, 1, pools[1].Stats.Available)
		require.Equal(t, keystore.Stats{}, pools[2].Stats)
	})

	t.Run("fences are per pool and never go back, even after the pool was empty", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generateIn("a", 1)
		e.generateIn("b", 1)
		fa := e.acquire(keystore.AcquireOptions{Pool: "a"}).Lease.Fence
		fb := e.acquire(keystore.AcquireOptions{Pool: "b"}).Lease.Fence
		require.Equal(t, fa, fb, "each pool counts its own leases")
		keys := e.generateIn("a", 1)
		next := e.acquire(keystore.AcquireOptions{Pool: "a"})
		require.Greater(t, next.Lease.Fence, fa)
		// Empty pool a, then fill it again.
		require.NoError(t, e.store.Delete(e.ctx, keys[0].ID))
		page, err := e.store.List(e.ctx, keystore.ListOptions{Pool: "a", First: 100})
		require.NoError(t, err)
		for _, k := range page.Keys {
			require.NoError(t, e.store.Delete(e.ctx, k.ID))
		}
		require.Equal(t, keystore.Stats{}, e.poolStats("a"))
		e.generateIn("a", 1)
		again := e.acquire(keystore.AcquireOptions{Pool: "a"})
		require.Greater(t, again.Lease.Fence, next.Lease.Fence)
	})

	t.Run("a lease's token is its key's: another pool's lease of the same fence does not match", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generateIn("a", 1)
		e.generateIn("b", 1)
		la := e.acquire(keystore.AcquireOptions{Pool: "a"})
		lb := e.acquire(keystore.AcquireOptions{Pool: "b"})
		require.Equal(t, la.Lease.Fence, lb.Lease.Fence, "each pool's first lease")
		_, err := e.store.Unblock(e.ctx, lb.ID, la.Lease.Token)
		requireCode(t, err, keystore.ELEASEMISMATCH)
		_, err = e.store.Renew(e.ctx, lb.ID, la.Lease.Token, nil)
		requireCode(t, err, keystore.ELEASEMISMATCH)
		require.Equal(t, keystore.Blocked, e.get(lb.ID).Status)
		_, err = e.store.Unblock(e.ctx, lb.ID, lb.Lease.Token)
		require.NoError(t, err)
	})

	t.Run("max pools bounds the pools made; one more is invalid and makes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{MaxPools: 2})
		e.generateIn("a", 1)
		e.generateIn("b", 1)
		_, err := e.store.Generate(e.ctx, "c", 1)
		requireCode(t, err, keystore.EINVALID)
		require.Contains(t, keystore.ErrorMessage(err), "2")
		e.generateIn("a", 1)
		e.requireStats(3, 3, 0)
		require.Equal(t, keystore.Stats{}, e.poolStats("c"))
	})

	t.Run("waiters wait per pool: a key of another pool wakes no one", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generateIn("a", 1)
		e.acquire(keystore.AcquireOptions{Pool: "a"})
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Pool: "a", Wait: 20 * time.Second}, 1)
		s, err := e.store.Stats(e.ctx, "a")
		require.NoError(t, err)
		require.Equal(t, 1, s.Waiting)
		s, err = e.store.Stats(e.ctx, "b")
		require.NoError(t, err)
		require.Equal(t, 0, s.Waiting)
		e.generateIn("b", 3)
		e.generateIn("", 3)
		require.Never(t, func() bool { return len(done) > 0 }, 100*time.Millisecond, tick, "a key of pool b served pool a's waiter")
		a := e.generateIn("a", 1)
		r := e.result(done)
		require.NoError(t, r.err)
		require.Equal(t, a[0].ID, r.key.ID)

		// A waiter on a pool not made yet is served by the pool's first keys. (A new
		// variable: Never's last check may still be reading done.)
		lateDone := e.startWaiter(e.ctx, keystore.AcquireOptions{Pool: "late", Wait: 20 * time.Second}, 1)
		late := e.generateIn("late", 1)
		r = e.result(lateDone)
		require.NoError(t, r.err)
		require.Equal(t, late[0].ID, r.key.ID)
	})

	t.Run("each pool has its own stream of events", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		subA := e.subscribe(keystore.SubscribeOptions{Pool: "a"})
		subD := e.subscribe(keystore.SubscribeOptions{})
		e.generateIn("b", 2)
		a := e.generateIn("a", 2)
		d := e.generateIn("", 1)
		evA := subA.waitFor(t, 2)
		evD := subD.waitFor(t, 1)
		require.Never(t, func() bool { return len(subA.snapshot()) > 2 || len(subD.snapshot()) > 1 }, 100*time.Millisecond, tick)
		require.Equal(t, int64(1), evA[0].Seq, "a pool's seqs start at 1")
		require.Equal(t, int64(1), evD[0].Seq)
		require.Equal(t, "a", evA[0].Pool)
		require.Equal(t, keystore.DefaultPool, evD[0].Pool)
		require.Equal(t, a[1].ID, evA[1].KeyID)
		require.Equal(t, d[0].ID, evD[0].KeyID)
		require.NotEqual(t, evA[0].Stream, evD[0].Stream, "each pool names its own stream")

		// A subscription to a pool made later sees its first events.
		subL := e.subscribe(keystore.SubscribeOptions{Pool: "later"})
		e.generateIn("later", 1)
		require.Equal(t, int64(1), subL.waitFor(t, 1)[0].Seq)
	})

	t.Run("the pick is uniform within a pool while another pool is busy", func(t *testing.T) {
		// A set of up to 512 members is stored by Redis as an array, where its
		// random pick happens to be uniform: a pool of 2000 keys shows a bias that a
		// small one hides.
		const keys, draws = 2000, 20
		e := setup(t, open, keystore.Options{})
		e.generateIn("busy", 50)
		want := idsOf(e.generateIn("u", keys))
		ctx, stop := context.WithCancel(e.ctx)
		var wg sync.WaitGroup
		wg.Go(func() { // the other pool is busy meanwhile
			for ctx.Err() == nil {
				k, err := e.store.Acquire(ctx, keystore.AcquireOptions{Pool: "busy"})
				if err == nil {
					_, _ = e.store.Unblock(ctx, k.ID, k.Lease.Token)
				}
			}
		})
		counts := map[string]int{}
		for range keys * draws {
			k := e.acquire(keystore.AcquireOptions{Pool: "u"})
			require.True(t, want[k.ID], "pool u's acquire got a key of another pool")
			counts[k.ID]++
			_, err := e.store.Unblock(e.ctx, k.ID, k.Lease.Token)
			require.NoError(t, err)
		}
		stop()
		wg.Wait()
		var chi2 float64
		for id := range want {
			d := float64(counts[id] - draws)
			chi2 += d * d / draws
		}
		// The chi-square statistic of keys-1 degrees of freedom, against its 0.9999
		// quantile (Wilson-Hilferty): a fair pick fails once in ten thousand runs.
		df := float64(keys - 1)
		limit := df * math.Pow(1-2/(9*df)+3.719*math.Sqrt(2/(9*df)), 3)
		require.Less(t, chi2, limit, "chi-square of the picks over %d keys", keys)
	})
}

func testHolders(t *testing.T, open Opener) {
	e := setup(t, open, keystore.Options{})
	sub := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventAcquired}})
	k := e.generate(1)[0]
	held := e.acquire(keystore.AcquireOptions{Holder: "build-42 on ci"})
	require.Equal(t, "build-42 on ci", held.Lease.Holder)
	require.Equal(t, "build-42 on ci", e.get(k.ID).Lease.Holder)
	require.Equal(t, "build-42 on ci", sub.waitFor(t, 1)[0].Holder)
	_, err := e.store.Unblock(e.ctx, k.ID, held.Lease.Token)
	require.NoError(t, err)
	anon := e.acquire(keystore.AcquireOptions{})
	require.Empty(t, anon.Lease.Holder, "a lease without a holder shows none, not the last one's")
	require.Empty(t, sub.waitFor(t, 2)[1].Holder)
	_, err = e.store.Unblock(e.ctx, k.ID, anon.Lease.Token)
	require.NoError(t, err)

	for _, bad := range []string{strings.Repeat("x", keystore.MaxHolder+1), "a\nb", "a\x00b", "\xff"} {
		_, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{Holder: bad})
		requireCode(t, err, keystore.EINVALID)
	}
	e.requireStats(1, 1, 0)
	e.acquire(keystore.AcquireOptions{Holder: strings.Repeat("é", keystore.MaxHolder/2)})

	// A waiter's holder goes with the key it is served.
	done := e.startWaiter(e.ctx, keystore.AcquireOptions{Holder: "waiter", Wait: 20 * time.Second}, 1)
	e.generate(1)
	r := e.result(done)
	require.NoError(t, r.err)
	require.Equal(t, "waiter", r.key.Lease.Holder)
}

// walk lists every page of opts and returns the keys in order.
func (e *env) walk(opts keystore.ListOptions) []keystore.Key {
	e.t.Helper()
	var keys []keystore.Key
	for {
		page, err := e.store.List(e.ctx, opts)
		require.NoError(e.t, err)
		keys = append(keys, page.Keys...)
		if !page.HasNext {
			return keys
		}
		require.NotEmpty(e.t, page.EndCursor)
		opts.After = page.EndCursor
	}
}

func testList(t *testing.T, open Opener) {
	t.Run("pages of a pool, of a state, and of every pool", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		a := e.generateIn("a", 25)
		b := e.generateIn("b", 5)
		blocked := map[string]bool{}
		for range 3 {
			blocked[e.acquire(keystore.AcquireOptions{Pool: "a"}).ID] = true
		}
		page, err := e.store.List(e.ctx, keystore.ListOptions{Pool: "a", First: 10})
		require.NoError(t, err)
		require.Len(t, page.Keys, 10)
		require.True(t, page.HasNext)

		all := e.walk(keystore.ListOptions{Pool: "a", First: 10})
		require.Len(t, all, 25)
		require.Equal(t, idsOf(a), idsOf(all), "each key of the pool once")
		again := e.walk(keystore.ListOptions{Pool: "a", First: 7})
		for i := range all {
			require.Equal(t, all[i].ID, again[i].ID, "the order is the same whatever the page size")
		}
		for _, k := range all {
			require.Equal(t, blocked[k.ID], k.Status == keystore.Blocked)
			if blocked[k.ID] {
				require.NotNil(t, k.Lease)
			}
		}

		onlyBlocked := e.walk(keystore.ListOptions{Pool: "a", Status: keystore.Blocked, First: 2})
		require.Equal(t, blocked, idsOf(onlyBlocked))
		onlyAvailable := e.walk(keystore.ListOptions{Pool: "a", Status: keystore.Available, First: 100})
		require.Len(t, onlyAvailable, 22)
		for _, k := range onlyAvailable {
			require.False(t, blocked[k.ID])
		}

		every := e.walk(keystore.ListOptions{First: 4})
		require.Len(t, every, 30)
		for i, k := range every {
			require.Equal(t, i >= 25, k.Pool == "b", "pools in order of name: key %d is of %s", i, k.Pool)
		}
		require.Equal(t, idsOf(b), idsOf(every[25:]))
		everyBlocked := e.walk(keystore.ListOptions{Status: keystore.Blocked, First: 100})
		require.Equal(t, blocked, idsOf(everyBlocked))

		empty, err := e.store.List(e.ctx, keystore.ListOptions{Pool: "never", First: 100})
		require.NoError(t, err)
		require.Empty(t, empty.Keys)
		require.False(t, empty.HasNext)
		require.Empty(t, empty.EndCursor)
		last, err := e.store.List(e.ctx, keystore.ListOptions{Pool: "b", First: 100})
		require.NoError(t, err)
		require.Len(t, last.Keys, 5)
		require.False(t, last.HasNext)
		after, err := e.store.List(e.ctx, keystore.ListOptions{Pool: "b", After: last.EndCursor, First: 100})
		require.NoError(t, err)
		require.Empty(t, after.Keys)
	})

	t.Run("bad options are invalid", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generateIn("a", 2)
		e.generateIn("b", 2)
		page, err := e.store.List(e.ctx, keystore.ListOptions{Pool: "a", First: 1})
		require.NoError(t, err)
		for _, opts := range []keystore.ListOptions{
			{First: -1},
			{First: 0},
			{First: keystore.MaxListFirst + 1},
			{Status: "GONE", First: 1},
			{Pool: "-x", First: 1},
			{After: "not a cursor", First: 1},
			{After: page.EndCursor + "x", First: 1},
			{Pool: "b", After: page.EndCursor, First: 1}, // a cursor of pool a's listing
		} {
			_, err := e.store.List(e.ctx, opts)
			requireCode(t, err, keystore.EINVALID)
		}
		page, err = e.store.List(e.ctx, keystore.ListOptions{First: keystore.MaxListFirst})
		require.NoError(t, err)
		require.Len(t, page.Keys, 4)
	})

	t.Run("a lease that ran out lists as AVAILABLE; an expired key not at all", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generateIn("a", 2)
		k := e.acquire(keystore.AcquireOptions{Pool: "a"})
		e.advance(keystore.DefaultLeaseTTL)
		require.Empty(t, e.walk(keystore.ListOptions{Status: keystore.Blocked, First: 100}))
		for _, got := range e.walk(keystore.ListOptions{Pool: "a", First: 100}) {
			require.Equal(t, keystore.Available, got.Status, "key %s (leased: %v)", got.ID, got.ID == k.ID)
		}
		e.advance(keystore.DefaultKeepAliveTTL)
		require.Empty(t, e.walk(keystore.ListOptions{First: 100}))
	})

	t.Run("a walk while keys come, go and change state sees each lasting key once", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		const n = 600
		keys := e.generateIn("a", n)
		e.generateIn("b", 50)
		lasting := map[string]bool{}
		for _, k := range keys {
			lasting[k.ID] = true
		}
		seen := map[string]int{}
		opts := keystore.ListOptions{Pool: "a", First: 25}
		for step := 0; ; step++ {
			page, err := e.store.List(e.ctx, opts)
			require.NoError(t, err)
			for _, k := range page.Keys {
				seen[k.ID]++
			}
			// Between pages: a key deleted, two made, two leased, one freed.
			victim := keys[(step*37)%n]
			if lasting[victim.ID] {
				require.NoError(t, e.store.Delete(e.ctx, victim.ID))
				lasting[victim.ID] = false
			}
			e.generateIn("a", 2)
			for range 2 {
				if k, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{Pool: "a"}); err == nil && step%3 == 0 {
					_, err = e.store.Unblock(e.ctx, k.ID, k.Lease.Token)
					require.NoError(t, err)
				}
			}
			if !page.HasNext {
				break
			}
			opts.After = page.EndCursor
		}
		for id, ok := range lasting {
			if ok {
				require.Equal(t, 1, seen[id], "a key that lasted the whole walk is seen once")
			}
		}
		for id, times := range seen {
			require.LessOrEqual(t, times, 1, "key %s seen twice", id)
		}
	})
}
