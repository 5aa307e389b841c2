package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestReplicasRecoverOnce: cool-downs set through both replicas end at one instant,
// while both replicas' expirers race for them: each ends exactly once (one RECOVERED
// event a key, one transition told to one Observer), on time.
func TestReplicasRecoverOnce(t *testing.T) {
	a, b, obsA, obsB, _ := replicas(t, keystore.Options{})
	ctx := context.Background()
	clock := a.b.clock.(interface{ Advance(time.Duration) })
	const keys = 40
	sub := must(b.Subscribe(ctx, keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventRecovered}}))(t)
	must(a.Generate(ctx, "", keys))(t)
	until := map[string]time.Time{}
	for i := range keys {
		// Leased and cooled through either replica.
		via := []testStore{a, b}[i%2]
		leased := must(via.Acquire(ctx, keystore.AcquireOptions{}))(t)
		cooled := must(via.UnblockWith(ctx, leased.ID, leased.Lease.Token, keystore.UnblockOptions{Cooldown: keystore.TTL(10 * time.Second)}))(t)
		require.Equal(t, keystore.Cooling, cooled.Status)
		until[cooled.ID] = *cooled.CoolingUntil
	}
	require.Equal(t, keystore.Stats{Total: keys, Cooling: keys}, must(a.Stats(ctx, ""))(t))

	clock.Advance(10 * time.Second)
	seen := map[string]int{}
	for range keys {
		ev := nextEvent(t, sub)
		seen[ev.KeyID]++
		require.True(t, ev.At.Equal(until[ev.KeyID]), "RECOVERED at %v, the cool-down ended at %v", ev.At, until[ev.KeyID])
	}
	require.Len(t, seen, keys, "a RECOVERED event for every key")
	waitFor(t, func() bool { return obsA.recovered.Load()+obsB.recovered.Load() == keys })
	quiet, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if ev, _ := sub.Next(quiet); ev != nil {
		t.Fatalf("a second RECOVERED: %+v", *ev)
	}
	require.EqualValues(t, keys, obsA.recovered.Load()+obsB.recovered.Load(), "transitions told to the observers")
	require.Equal(t, keystore.Stats{Total: keys, Available: keys}, must(b.Stats(ctx, ""))(t))
}

// TestReplicasHonourCooldownAtOnce: a cool-down set through one replica holds on the
// other at once: it neither hands the key out nor unblocks it, and sees it COOLING;
// a restore through the other ends it for both.
func TestReplicasHonourCooldownAtOnce(t *testing.T) {
	a, b, _, _, _ := replicas(t, keystore.Options{QuarantineAfter: 1})
	ctx := context.Background()
	must(a.Generate(ctx, "", 2))(t)
	first := must(a.Acquire(ctx, keystore.AcquireOptions{}))(t)
	second := must(a.Acquire(ctx, keystore.AcquireOptions{}))(t)
	must(a.UnblockWith(ctx, first.ID, first.Lease.Token, keystore.UnblockOptions{Cooldown: keystore.TTL(time.Minute)}))(t)
	must(a.UnblockWith(ctx, second.ID, second.Lease.Token, keystore.UnblockOptions{Failed: true}))(t)

	_, err := b.Acquire(ctx, keystore.AcquireOptions{})
	wantCode(t, err, keystore.ENOTFOUND)
	require.Equal(t, keystore.Cooling, must(b.Get(ctx, first.ID))(t).Status)
	require.Equal(t, keystore.Quarantined, must(b.Get(ctx, second.ID))(t).Status)
	_, err = b.Unblock(ctx, first.ID, "")
	wantCode(t, err, keystore.ENOTBLOCKED)
	require.Equal(t, keystore.Stats{Total: 2, Cooling: 1, Quarantined: 1}, must(b.Stats(ctx, ""))(t))

	must(b.Restore(ctx, first.ID))(t)
	again := must(a.Acquire(ctx, keystore.AcquireOptions{}))(t)
	require.Equal(t, first.ID, again.ID)
}

// TestCooldownStorm: cool-downs that all end at one instant, more than a request's
// batch, with no expirer running. A request applies at most its batch on its way in
// (so it is not held up by the storm) and still gets a key; the expirer's script then
// applies the rest in batches of expiryBatch, each cool-down once.
func TestCooldownStorm(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	s := openStore(t, srv, clock, keystore.Options{})
	ctx := context.Background()
	const keys = 3*expiryBatch + 17
	must(s.Generate(ctx, "", keys))(t)
	for range keys {
		k := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
		must(s.UnblockWith(ctx, k.ID, k.Lease.Token, keystore.UnblockOptions{Cooldown: keystore.TTL(10 * time.Second)}))(t)
	}
	stopLoops(s)
	clock.Advance(10 * time.Second)
	rdb := srv.client()
	defer rdb.Close()
	cools := "{" + s.b.namespace + ":default}:cools"
	cooling := func() int64 { return must(rdb.do("ZCARD", cools).AsInt64())(t) }

	got := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	require.Equal(t, keystore.Blocked, got.Status)
	left := cooling()
	require.GreaterOrEqual(t, left, int64(keys-2*keystore.RequestBatch), "the acquire drained the storm")
	require.Less(t, left, int64(keys))

	p := s.b.reg.get(keystore.DefaultPool)
	storm, batches := left, 0
	for {
		res, _, err := s.b.run(ctx, p, s.b.scripts.expire, readOnly, expiryBatch, s.b.repliesTTL)
		require.NoError(t, err)
		applied := res[2]
		require.LessOrEqual(t, applied, int64(expiryBatch))
		if applied == 0 {
			break
		}
		batches++
		if after := cooling(); after > 0 {
			require.EqualValues(t, expiryBatch, applied, "a batch short of its bound while cool-downs were due")
			require.Equal(t, left-applied, after)
			left = after
		}
	}
	require.Zero(t, cooling())
	require.EqualValues(t, (storm+expiryBatch-1)/expiryBatch, batches, "batches for %d cool-downs", storm)
	recovered := 0
	for _, e := range must(rdb.do("XRANGE", "{"+s.b.namespace+":default}:events:"+p.id, "-", "+").ToArray())(t) {
		fields := must(must(e.ToArray())(t)[1].AsStrSlice())(t)
		if fields[1] == string(keystore.EventRecovered) {
			recovered++
		}
	}
	require.Equal(t, keys, recovered, "one RECOVERED a cool-down")
	require.Equal(t, keystore.Stats{Total: keys, Available: keys - 1, Blocked: 1}, must(s.Stats(ctx, ""))(t))
}
