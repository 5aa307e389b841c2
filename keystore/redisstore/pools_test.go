package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestLayoutRefused: a replica refuses, with one line naming the layout, a namespace
// that another layout wrote: layout 1 (before pools), which kept one pool under the
// namespace's own tag and stored no version, layout 3 (a hash a key, before the pools'
// due and the replies packed by struct), and a later one. It writes nothing there.
func TestLayoutRefused(t *testing.T) {
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	// What layout 1 left in a namespace: its secret, its pool id and its keys.
	must(rdb.do("SET", "{old}:secret", strings.Repeat("s", keystore.SecretSize)).ToString())(t)
	must(rdb.do("SET", "{old}:pool", "0123456789abcdef01234567").ToString())(t)
	must(rdb.do("ZADD", "{old}:alive", "1", "1").AsInt64())(t)
	// Layout 3 and a later one.
	must(rdb.do("SET", "{before}:layout", "3").ToString())(t)
	must(rdb.do("SET", "{later}:layout", "5").ToString())(t)
	for ns, layout := range map[string]string{"old": "1", "before": "3", "later": "5"} {
		_, err := New(ctx, srv.url(), newFakeClock(), keystore.Options{}, WithNamespace(ns))
		require.Error(t, err, "a replica joined a namespace of layout %s", layout)
		msg := err.Error()
		require.Contains(t, msg, fmt.Sprintf("namespace %q", ns))
		require.Contains(t, msg, "layout "+layout)
		require.Contains(t, msg, "layout "+layoutVersion)
		require.NotContains(t, msg, "\n")
	}
	require.EqualValues(t, 0, must(rdb.do("EXISTS", "{old}:layout", "{old}:id", "{old:default}:meta").AsInt64())(t),
		"the refusing replica wrote into the old namespace")
	require.Equal(t, "3", must(rdb.do("GET", "{before}:layout").ToString())(t))
	require.Equal(t, "5", must(rdb.do("GET", "{later}:layout").ToString())(t))

	// A namespace this layout made records its version, and so does each pool.
	s := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "current")
	must(s.Generate(ctx, "p", 1))(t)
	require.Equal(t, layoutVersion, must(rdb.do("GET", "{current}:layout").ToString())(t))
	require.Equal(t, layoutVersion, must(rdb.do("HGET", "{current:p}:meta", "layout").ToString())(t))
}

// TestPoolTagTaken: a pool's hash tag that holds keys this store did not write (here a
// namespace named like the tag) is refused, not read as the new pool's.
func TestPoolTagTaken(t *testing.T) {
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	must(rdb.do("ZADD", "{ns:p}:alive", "1", "1").AsInt64())(t)
	s := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "ns")
	_, err := s.Generate(ctx, "p", 1)
	require.Error(t, err)
	require.EqualValues(t, 1, must(rdb.do("ZCARD", "{ns:p}:alive").AsInt64())(t))
	// Other pools are made as usual, and found by other replicas, the refused one aside.
	must(s.Generate(ctx, "q", 1))(t)
	other := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "ns")
	pools := must(other.Pools(ctx))(t)
	require.Len(t, pools, 2)
	require.Equal(t, "q", pools[1].Name)
	require.Equal(t, 1, pools[1].Stats.Total)
	_, err = other.Stats(ctx, "p")
	require.Error(t, err)
}

// TestPoolKeysUnderTheirTag: every Redis key a pool's scripts write is under the pool's
// hash tag, and the namespace's under its own, so that a cluster can hold each pool
// in one slot.
func TestPoolKeysUnderTheirTag(t *testing.T) {
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	s := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "tags")
	for _, pool := range []string{"a", "b.c"} {
		must(s.Generate(ctx, pool, 2))(t)
		k := must(s.Acquire(ctx, keystore.AcquireOptions{Pool: pool, Holder: "h"}))(t)
		must(s.Renew(ctx, k.ID, k.Lease.Token, nil))(t)
		must(s.KeepAlive(ctx, k.ID))(t)
		must(s.Unblock(ctx, k.ID, k.Lease.Token))(t)
	}
	keys := must(rdb.do("KEYS", "*").AsStrSlice())(t)
	for _, key := range keys {
		tag, _, ok := strings.Cut(strings.TrimPrefix(key, "{"), "}")
		require.True(t, ok && strings.HasPrefix(key, "{"), "key %q has no hash tag", key)
		require.Contains(t, []string{"tags", "tags:a", "tags:b.c"}, tag, "key %q", key)
	}
	require.Greater(t, len(keys), 10)
}

// TestReplicasSharePools: a pool made on one replica is found by another, for every
// operation: by name (acquire, stats, pools, list, events) and by its keys' ids.
func TestReplicasSharePools(t *testing.T) {
	a, b, _, _, _ := replicas(t, keystore.Options{})
	ctx := context.Background()
	// b follows the pool before it is made, and a replica learns of it from the stream
	// of pools made.
	subB := must(b.Subscribe(ctx, keystore.SubscribeOptions{Pool: "shared"}))(t)
	keys := must(a.Generate(ctx, "shared", 2))(t)
	ev := wantEvent(t, subB, keystore.EventGenerated, keys[0].ID)
	require.Equal(t, "shared", ev.Pool)
	require.Equal(t, int64(1), ev.Seq)
	wantEvent(t, subB, keystore.EventGenerated, keys[1].ID)

	got := must(b.Get(ctx, keys[1].ID))(t)
	require.Equal(t, "shared", got.Pool)
	leased := must(b.Acquire(ctx, keystore.AcquireOptions{Pool: "shared", Holder: "on b"}))(t)
	ev = wantEvent(t, subB, keystore.EventAcquired, leased.ID)
	require.Equal(t, "on b", ev.Holder)
	seen := must(a.Get(ctx, leased.ID))(t)
	require.Equal(t, "on b", seen.Lease.Holder, "a replica reads the holder another stored")
	require.Equal(t, leased.Lease.Token, seen.Lease.Token)

	require.Equal(t, keystore.Stats{Total: 2, Available: 1, Blocked: 1}, must(b.Stats(ctx, "shared"))(t))
	pools := must(b.Pools(ctx))(t)
	require.Len(t, pools, 2)
	require.Equal(t, "shared", pools[1].Name)
	page := must(b.List(ctx, keystore.ListOptions{Pool: "shared", Status: keystore.Blocked, First: 10}))(t)
	require.Len(t, page.Keys, 1)
	require.Equal(t, "on b", page.Keys[0].Lease.Holder)

	// The two name the pool's stream alike; another pool's stream is another.
	subA := must(a.Subscribe(ctx, keystore.SubscribeOptions{Pool: "shared"}))(t)
	must(a.Unblock(ctx, leased.ID, leased.Lease.Token))(t)
	evA, evB := wantEvent(t, subA, keystore.EventUnblocked, leased.ID), wantEvent(t, subB, keystore.EventUnblocked, leased.ID)
	require.Equal(t, evA.Stream, evB.Stream)
	require.Equal(t, evA.Seq, evB.Seq)
	other := must(a.Generate(ctx, "", 1))(t)
	subD := must(b.Subscribe(ctx, keystore.SubscribeOptions{After: new(int64)}))(t)
	evD := wantEvent(t, subD, keystore.EventGenerated, other[0].ID)
	require.NotEqual(t, evA.Stream, evD.Stream)
	require.Equal(t, int64(1), evD.Seq)
}

// TestLateReplicaReplaysEachPool: a replica that starts after events were made in
// several pools loads each pool's retained events, so a replay with After works per
// pool there.
func TestLateReplicaReplaysEachPool(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	clock := newFakeClock()
	a := openNamespace(t, srv, clock, keystore.Options{}, "late-pools")
	for i, pool := range []string{"x", "y"} {
		must(a.Generate(ctx, pool, 2+i))(t)
	}
	b := openNamespace(t, srv, clock, keystore.Options{}, "late-pools")
	for i, pool := range []string{"x", "y"} {
		after := int64(1)
		sub := must(b.Subscribe(ctx, keystore.SubscribeOptions{Pool: pool, After: &after}))(t)
		for seq := int64(2); seq <= int64(2+i); seq++ {
			ev := nextEvent(t, sub)
			require.Equal(t, seq, ev.Seq)
			require.Equal(t, pool, ev.Pool)
		}
	}
}

// TestReplicasMakeAtMostMaxPools: replicas that make pools at once never make more
// than MaxPools together; each pool is made once, under one index.
func TestReplicasMakeAtMostMaxPools(t *testing.T) {
	const max = 5
	a, b, _, _, _ := replicas(t, keystore.Options{MaxPools: max})
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := map[string]int{}
	for i := range 2 * max {
		for j, s := range []testStore{a, b} {
			wg.Go(func() {
				pool := fmt.Sprintf("p%d", i)
				_, err := s.Generate(ctx, pool, 1+j)
				if keystore.ErrorCode(err) == keystore.EINVALID {
					return
				}
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				made[pool] += 1 + j
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	require.Len(t, made, max)
	pools := must(a.Pools(ctx))(t)
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
		if p.Name != keystore.DefaultPool {
			require.Equal(t, made[p.Name], p.Stats.Total, "pool %s", p.Name)
		}
	}
	require.Len(t, names, max+1, "the made pools and the default one: %v", names)
	require.Equal(t, pools, must(b.Pools(ctx))(t))
	indexes := map[uint64]bool{}
	for _, p := range b.b.reg.all() {
		require.False(t, indexes[p.index], "index %d twice", p.index)
		indexes[p.index] = true
	}
}

// TestNoKeyOfAnotherPool: acquires of several pools on two replicas at once only ever
// get keys of their own pool.
func TestNoKeyOfAnotherPool(t *testing.T) {
	a, b, _, _, _ := replicas(t, keystore.Options{})
	ctx := context.Background()
	pools := []string{"p0", "p1", "p2"}
	owner := map[string]string{}
	for _, pool := range pools {
		for _, k := range must(a.Generate(ctx, pool, 6))(t) {
			owner[k.ID] = pool
		}
	}
	var wg sync.WaitGroup
	for i := range 12 {
		s := []testStore{a, b}[i%2]
		pool := pools[i%len(pools)]
		wg.Go(func() {
			for range 100 {
				k, err := s.Acquire(ctx, keystore.AcquireOptions{Pool: pool, Wait: 2 * time.Second})
				if err != nil {
					t.Errorf("acquire of %s: %v", pool, err)
					return
				}
				if owner[k.ID] != pool || k.Pool != pool {
					t.Errorf("an acquire of pool %s got key %s of pool %s (%s)", pool, k.ID, owner[k.ID], k.Pool)
				}
				if _, err := s.Unblock(ctx, k.ID, k.Lease.Token); err != nil {
					t.Errorf("unblock: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestHolderSurvivesLostReply: the reply of an acquire with a holder is lost; the
// replayed reply carries the holder as it was given, whatever its characters.
func TestHolderSurvivesLostReply(t *testing.T) {
	_, px, s := lostReply(t)
	ctx := context.Background()
	holder := "job|42, step:3 — ünïcode"
	px.loseReplyTo(defaultLibrary.fn(scriptAcquire, false))
	k := must(s.Acquire(ctx, keystore.AcquireOptions{Holder: holder}))(t)
	require.EqualValues(t, 1, px.dropped.Load(), "replies lost")
	require.Equal(t, holder, k.Lease.Holder)
	px.loseReplyTo(defaultLibrary.fn(scriptRenew, false))
	renewed := must(s.Renew(ctx, k.ID, k.Lease.Token, nil))(t)
	require.EqualValues(t, 2, px.dropped.Load(), "replies lost")
	require.Equal(t, holder, renewed.Lease.Holder)
	require.Equal(t, holder, must(s.Get(ctx, k.ID))(t).Lease.Holder)
}

// stopLoops stops a store's background loops, keeping its client: only the scripts
// themselves apply deadlines then.
func stopLoops(s testStore) {
	s.b.cancel()
	s.b.wg.Wait()
}

// TestBacklogAcquire: a backlog of due transitions larger than a request's batch,
// which no expirer applies: an Acquire still finds the one live free key, never says
// NOT_FOUND while there is one, and never takes a dead key. In one pool the dead keys
// are AVAILABLE keys whose keep-alive passed, in another leases that ran out; in a
// third the one free key hides among dead ones and live leases, where one script's
// picks mostly miss it (undecided: the Store runs the script again).
func TestBacklogAcquire(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	s := openStore(t, srv, clock, keystore.Options{LeaseTTL: 10 * time.Second, KeepAliveTTL: time.Minute})
	ctx := context.Background()
	const backlog = 20 * keystore.RequestBatch

	// Pool dead: many keys whose keep-alive will pass, then one made later. Pool leased,
	// made later: many leases that will run out, and one that holds for longer.
	must(s.Generate(ctx, "dead", backlog))(t)
	// Pool crowded: 2000 keys leased for long, 1000 AVAILABLE whose keep-alive will pass,
	// and one made later.
	must(s.Generate(ctx, "crowded", 2000))(t)
	var crowd []keystore.Key
	for range 2000 {
		crowd = append(crowd, must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "crowded", TTL: keystore.TTL(time.Hour)}))(t))
	}
	must(s.Generate(ctx, "crowded", 1000))(t)
	stopLoops(s)
	clock.Advance(30 * time.Second)
	live := must(s.Generate(ctx, "dead", 1))(t)[0]
	for _, k := range crowd {
		must(s.KeepAlive(ctx, k.ID))(t)
	}
	hidden := must(s.Generate(ctx, "crowded", 1))(t)[0]
	must(s.Generate(ctx, "leased", backlog+1))(t)
	long := must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "leased", TTL: keystore.TTL(time.Hour)}))(t)
	for range backlog {
		must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "leased"}))(t)
	}
	clock.Advance(30 * time.Second) // the first keys' keep-alive has passed, the leases have run out

	got := must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "dead"}))(t)
	require.Equal(t, live.ID, got.ID)
	_, err := s.Acquire(ctx, keystore.AcquireOptions{Pool: "dead"})
	wantCode(t, err, keystore.ENOTFOUND)

	for range backlog {
		k := must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "leased"}))(t)
		require.NotEqual(t, long.ID, k.ID)
	}
	_, err = s.Acquire(ctx, keystore.AcquireOptions{Pool: "leased"})
	wantCode(t, err, keystore.ENOTFOUND)
	require.Equal(t, keystore.Stats{Total: backlog + 1, Blocked: backlog + 1}, must(s.Stats(ctx, "leased"))(t))

	// Nothing else runs scripts now (the loops are stopped).
	before := fcallCalls(t, srv)
	got = must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "crowded"}))(t)
	require.Equal(t, hidden.ID, got.ID)
	t.Logf("the acquire in the crowded pool ran the script %d times", fcallCalls(t, srv)-before)
	_, err = s.Acquire(ctx, keystore.AcquireOptions{Pool: "crowded"})
	wantCode(t, err, keystore.ENOTFOUND)
}

// fcallCalls returns how many FCALL calls Redis has run.
func fcallCalls(t testing.TB, srv *redisServer) int64 {
	rdb := srv.client()
	defer rdb.Close()
	text := must(rdb.do("INFO", "commandstats").ToString())(t)
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_fcall:calls="); ok {
			n, _, _ := strings.Cut(rest, ",")
			return must(strconv.ParseInt(n, 10, 64))(t)
		}
	}
	return 0
}

// TestListOrder: a walk of every state merges the AVAILABLE and BLOCKED keys in the
// order of their numbers, whatever the page size.
func TestListOrder(t *testing.T) {
	srv := startRedis(t)
	s := openStore(t, srv, newFakeClock(), keystore.Options{})
	ctx := context.Background()
	must(s.Generate(ctx, "o", 50))(t)
	blocked := map[string]bool{}
	for range 20 {
		blocked[must(s.Acquire(ctx, keystore.AcquireOptions{Pool: "o"}))(t).ID] = true
	}
	for _, first := range []int{1, 7, 50, 100} {
		opts := keystore.ListOptions{Pool: "o", First: first}
		var ns []uint64
		for {
			page := must(s.List(ctx, opts))(t)
			for _, k := range page.Keys {
				n, ok := s.b.ids.ParseKeyID(k.ID)
				require.True(t, ok)
				require.Equal(t, blocked[k.ID], k.Status == keystore.Blocked)
				ns = append(ns, n)
			}
			if !page.HasNext {
				break
			}
			opts.After = page.EndCursor
		}
		require.Len(t, ns, 50, "pages of %d", first)
		require.True(t, slices.IsSorted(ns), "pages of %d: numbers %v", first, ns)
		require.Len(t, slices.Compact(ns), 50, "pages of %d: a key twice", first)
	}
}

// TestExpirerRunsEveryPool: one expirer, with one timer, applies the deadlines of every
// pool at their instants, with no request to help: leases of two pools that end at
// different instants, set on one replica, applied by the other (the first is closed).
func TestExpirerRunsEveryPool(t *testing.T) {
	a, b, _, obsB, _ := replicas(t, keystore.Options{KeepAliveTTL: time.Hour})
	ctx := context.Background()
	clock := a.b.clock.(interface {
		Advance(time.Duration)
		BlockUntilContext(context.Context, int) error
	})
	subs := map[string]*keystore.Subscription{}
	leases := map[string]keystore.Key{}
	for i, pool := range []string{"a", "b"} {
		subs[pool] = must(b.Subscribe(ctx, keystore.SubscribeOptions{Pool: pool, Types: []keystore.EventType{keystore.EventReleased}}))(t)
		must(a.Generate(ctx, pool, 1))(t)
		leases[pool] = must(a.Acquire(ctx, keystore.AcquireOptions{Pool: pool, TTL: keystore.TTL(time.Duration(10*(i+1)) * time.Second)}))(t)
	}
	require.NoError(t, a.Close())
	// b learns of both leases from the streams; its expirer then sleeps on one timer.
	waitFor(t, func() bool {
		b.b.mu.Lock()
		defer b.b.mu.Unlock()
		return b.b.wakeAt == b.b.units(leases["a"].Lease.ExpiresAt.Sub(b.b.base))
	})
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, clock.BlockUntilContext(wait, 1))

	clock.Advance(10 * time.Second)
	ev := wantEvent(t, subs["a"], keystore.EventReleased, leases["a"].ID)
	require.True(t, ev.At.Equal(leases["a"].Lease.ExpiresAt))
	quiet, cancelQuiet := context.WithTimeout(ctx, 100*time.Millisecond)
	if ev, _ := subs["b"].Next(quiet); ev != nil {
		t.Fatalf("pool b's lease released early: %+v", *ev)
	}
	cancelQuiet()
	require.NoError(t, clock.BlockUntilContext(wait, 1))
	clock.Advance(10 * time.Second)
	ev = wantEvent(t, subs["b"], keystore.EventReleased, leases["b"].ID)
	require.True(t, ev.At.Equal(leases["b"].Lease.ExpiresAt))
	waitFor(t, func() bool { return obsB.released.Load() == 2 })
}

// TestBacklogList: a page of List over a backlog of dead keys that no expirer has
// deleted yet looks at a bounded number of keys per script and goes on from where the
// last one stopped: it lists the live keys, in order, and no dead one.
func TestBacklogList(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	s := openStore(t, srv, clock, keystore.Options{KeepAliveTTL: time.Minute})
	ctx := context.Background()
	const first = keystore.DefaultListFirst
	const dead = 10 * (first + listSlack) // ten scripts' worth of keys to look at
	live := must(s.Generate(ctx, "", 3))(t)
	must(s.Generate(ctx, "", dead))(t)
	stopLoops(s)
	clock.Advance(30 * time.Second)
	for _, k := range live {
		must(s.KeepAlive(ctx, k.ID))(t)
	}
	live = append(live, must(s.Generate(ctx, "", 2))(t)...)
	clock.Advance(30 * time.Second) // the keys between have expired; none was deleted
	before := fcallCalls(t, srv)
	page := must(s.List(ctx, keystore.ListOptions{First: first}))(t)
	scripts := fcallCalls(t, srv) - before
	var got, want []string
	for _, k := range page.Keys {
		got = append(got, k.ID)
	}
	for _, k := range live {
		want = append(want, k.ID)
	}
	require.Equal(t, want, got)
	require.False(t, page.HasNext)
	require.Greater(t, scripts, int64(dead/(first+1+listSlack)), "the page looked at the dead keys in too few scripts")
	require.Equal(t, keystore.Stats{Total: 5, Available: 5}, must(s.Stats(ctx, ""))(t))
}
