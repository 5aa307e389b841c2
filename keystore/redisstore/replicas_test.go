package redisstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keypool/keypool/keystore"
)

// TestMain fails the package if any goroutine outlives its store: every test closes
// its stores (t.Cleanup), and Close must stop the expirer, the stream reader, the
// dispatcher, the hub's feeds and the Redis client's own goroutines. One exception:
// the cluster client, when it learns the cluster's layout, closes the connections it
// replaces (its seed's) 5 s later, in a goroutine that sleeps that long whether or not
// the client is closed meanwhile: bounded, and the client's own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"))
}

// countingObserver counts what a replica's Observer hears.
type countingObserver struct {
	keystore.NopObserver
	released, recovered, expired atomic.Int64
	waiting                      atomic.Int64
}

func (o *countingObserver) Expired(t keystore.EventType, _ time.Duration) {
	switch t {
	case keystore.EventReleased:
		o.released.Add(1)
	case keystore.EventRecovered:
		o.recovered.Add(1)
	default:
		o.expired.Add(1)
	}
}

func (o *countingObserver) WaitersChanged(d int) { o.waiting.Add(int64(d)) }

// replicas opens two stores on one pool in one redis-server, sharing a fake clock.
func replicas(t *testing.T, opts keystore.Options) (a, b testStore, obsA, obsB *countingObserver, srv *redisServer) {
	t.Helper()
	srv = startRedis(t)
	clock := newFakeClock()
	ns := fmt.Sprintf("pool%d", namespaces.Add(1))
	obsA, obsB = &countingObserver{}, &countingObserver{}
	optsA, optsB := opts, opts
	optsA.Observer, optsB.Observer = obsA, obsB
	a = openNamespace(t, srv, clock, optsA, ns)
	b = openNamespace(t, srv, clock, optsB, ns)
	return a, b, obsA, obsB, srv
}

func TestReplicasShareKeysAndLeases(t *testing.T) {
	a, b, _, _, _ := replicas(t, keystore.Options{})
	ctx := context.Background()
	subA := must(a.Subscribe(ctx, keystore.SubscribeOptions{}))(t)

	k := must(b.Generate(ctx, "", 1))(t)[0]
	wantEvent(t, subA, keystore.EventGenerated, k.ID)
	leased := must(a.Acquire(ctx, keystore.AcquireOptions{}))(t)
	if leased.ID != k.ID {
		t.Fatalf("acquired %s, want %s", leased.ID, k.ID)
	}
	seen := must(b.Get(ctx, k.ID))(t)
	if seen.Status != keystore.Blocked || seen.Lease == nil || seen.Lease.Token != leased.Lease.Token || seen.Lease.Fence != leased.Lease.Fence {
		t.Fatalf("the other replica sees %+v, want the lease %+v", seen, leased.Lease)
	}
	_, err := b.Acquire(ctx, keystore.AcquireOptions{})
	wantCode(t, err, keystore.ENOTFOUND)
	_, err = b.Unblock(ctx, k.ID, b.b.ids.Token(mustKeyNumber(t, b.b.ids, k.ID), leased.Lease.Fence+1))
	wantCode(t, err, keystore.ELEASEMISMATCH)

	must(b.Unblock(ctx, k.ID, leased.Lease.Token))(t)
	if got := must(a.Get(ctx, k.ID))(t); got.Status != keystore.Available {
		t.Fatalf("after Unblock on the other replica: %+v", got)
	}
	wantEvent(t, subA, keystore.EventAcquired, k.ID)
	wantEvent(t, subA, keystore.EventUnblocked, k.ID) // made on b, seen on a
	if st := must(a.Stats(ctx, ""))(t); st != (keystore.Stats{Total: 1, Available: 1}) {
		t.Fatalf("stats %+v", st)
	}
}

// TestReplicasReleaseOnce: a lease taken on one replica runs out; a subscriber on the
// other sees RELEASED exactly once, though both replicas run an expirer.
func TestReplicasReleaseOnce(t *testing.T) {
	a, b, obsA, obsB, _ := replicas(t, keystore.Options{LeaseTTL: 10 * time.Second})
	ctx := context.Background()
	clock := a.b.clock.(interface{ Advance(time.Duration) })
	subB := must(b.Subscribe(ctx, keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventReleased}}))(t)
	must(a.Generate(ctx, "", 3))(t)
	leased := must(a.Acquire(ctx, keystore.AcquireOptions{}))(t)

	clock.Advance(10 * time.Second)
	ev := wantEvent(t, subB, keystore.EventReleased, leased.ID)
	if !ev.At.Equal(leased.Lease.ExpiresAt) {
		t.Fatalf("RELEASED at %v, want the deadline %v", ev.At, leased.Lease.ExpiresAt)
	}
	// The transition was applied once, by one replica, and told to its Observer only.
	waitFor(t, func() bool { return obsA.released.Load()+obsB.released.Load() == 1 })
	quiet, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if ev, _ := subB.Next(quiet); ev != nil {
		t.Fatalf("a second event %+v", *ev)
	}
	cancel()
	if n := obsA.released.Load() + obsB.released.Load(); n != 1 {
		t.Fatalf("observers heard %d releases", n)
	}
	if got := must(b.Get(ctx, leased.ID))(t); got.History.LeasesExpired != 1 || got.Status != keystore.Available {
		t.Fatalf("after the lease: %+v", got)
	}
}

// TestReplicasParallelAcquire: 64 Acquires spread over two replicas race for 8 keys.
func TestReplicasParallelAcquire(t *testing.T) {
	a, b, _, _, _ := replicas(t, keystore.Options{})
	ctx := context.Background()
	must(a.Generate(ctx, "", 8))(t)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners = map[string]int64{}
		fences  = map[int64]bool{}
		losers  int
	)
	start := make(chan struct{})
	for i := range 64 {
		store := a
		if i%2 == 1 {
			store = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			k, err := store.Acquire(ctx, keystore.AcquireOptions{})
			mu.Lock()
			defer mu.Unlock()
			switch keystore.ErrorCode(err) {
			case "":
				if _, dup := winners[k.ID]; dup {
					t.Errorf("key %s leased twice", k.ID)
				}
				if fences[k.Lease.Fence] {
					t.Errorf("fence %d granted twice", k.Lease.Fence)
				}
				winners[k.ID], fences[k.Lease.Fence] = k.Lease.Fence, true
			case keystore.ENOTFOUND:
				losers++
			default:
				t.Errorf("Acquire: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(winners) != 8 || losers != 56 {
		t.Fatalf("%d winners, %d losers; want 8 and 56", len(winners), losers)
	}
	if st := must(b.Stats(ctx, ""))(t); st != (keystore.Stats{Total: 8, Blocked: 8}) {
		t.Fatalf("stats %+v", st)
	}
}

// TestReplicasWaiterServedByOther: an Acquire waiting on one replica is served when a
// key is freed on the other.
func TestReplicasWaiterServedByOther(t *testing.T) {
	a, b, _, obsB, _ := replicas(t, keystore.Options{})
	ctx := context.Background()
	must(a.Generate(ctx, "", 1))(t)
	held := must(a.Acquire(ctx, keystore.AcquireOptions{}))(t)
	type result struct {
		key keystore.Key
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := b.Acquire(ctx, keystore.AcquireOptions{Wait: 10 * time.Second})
		done <- result{k, err}
	}()
	waitFor(t, func() bool { return obsB.waiting.Load() == 1 })
	must(a.Unblock(ctx, held.ID, held.Lease.Token))(t)
	select {
	case r := <-done:
		if r.err != nil || r.key.ID != held.ID || r.key.Lease.Fence <= held.Lease.Fence {
			t.Fatalf("waiter got %+v, %v", r.key, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was not served")
	}
}

// TestReplicaClosedMidLoad: one replica closes while both run acquire/unblock cycles.
// No key is lost, none is leased to two holders at once, and the leases the closed
// replica left behind run out on the other.
func TestReplicaClosedMidLoad(t *testing.T) {
	const keys, workers, cycles = 16, 4, 150
	a, b, _, _, _ := replicas(t, keystore.Options{LeaseTTL: 10 * time.Second})
	ctx := context.Background()
	clock := a.b.clock.(interface{ Advance(time.Duration) })
	ids := map[string]bool{}
	for _, k := range must(a.Generate(ctx, "", keys))(t) {
		ids[k.ID] = true
	}
	holders := map[string]*atomic.Int32{}
	for id := range ids {
		holders[id] = &atomic.Int32{}
	}
	var (
		wg        sync.WaitGroup
		fenceMu   sync.Mutex
		fences    = map[int64]bool{}
		acquiredA atomic.Int64
	)
	cycle := func(store testStore, onA bool) {
		defer wg.Done()
		for range cycles {
			k, err := store.Acquire(ctx, keystore.AcquireOptions{})
			switch code := keystore.ErrorCode(err); {
			case code == keystore.ENOTFOUND:
				continue
			case code == keystore.EUNAVAILABLE && onA:
				return // this replica closed
			case err != nil:
				t.Errorf("Acquire: %v", err)
				return
			}
			if onA {
				acquiredA.Add(1)
			}
			fenceMu.Lock()
			if fences[k.Lease.Fence] {
				t.Errorf("fence %d granted twice", k.Lease.Fence)
			}
			fences[k.Lease.Fence] = true
			fenceMu.Unlock()
			if holders[k.ID].Add(1) != 1 {
				t.Errorf("key %s leased to two holders at once", k.ID)
			}
			holders[k.ID].Add(-1) // before Unblock: once it is applied, another may lease the key
			_, err = store.Unblock(ctx, k.ID, k.Lease.Token)
			switch code := keystore.ErrorCode(err); {
			case code == keystore.EUNAVAILABLE && onA:
				return // closed while holding: the lease runs out below
			case err != nil:
				t.Errorf("Unblock of our own lease: %v", err)
				return
			}
		}
	}
	for i := range 2 * workers {
		wg.Add(1)
		go cycle([]testStore{a, b}[i%2], i%2 == 0)
	}
	waitFor(t, func() bool { return acquiredA.Load() >= 20 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	st := must(b.Stats(ctx, ""))(t)
	if st.Total != keys {
		t.Fatalf("after the close: %+v, want %d keys", st, keys)
	}
	clock.Advance(10 * time.Second) // whatever the closed replica held runs out
	waitFor(t, func() bool { return must(b.Stats(ctx, ""))(t) == keystore.Stats{Total: keys, Available: keys} })
	for id := range ids {
		must(b.Get(ctx, id))(t)
	}
	t.Logf("%d leases granted, %d on the replica that closed", len(fences), acquiredA.Load())
}

// TestRedisRestart: while Redis is down every call fails with UNAVAILABLE (never a
// wrong answer) and Ready says so; once it is back the store recovers by itself: the
// stream reader and the expirer go on.
func TestRedisRestart(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	s := openStore(t, srv, clock, keystore.Options{LeaseTTL: 10 * time.Second})
	ctx := context.Background()
	sub := must(s.Subscribe(ctx, keystore.SubscribeOptions{}))(t)
	keys := must(s.Generate(ctx, "", 2))(t)
	wantEvent(t, sub, keystore.EventGenerated, keys[0].ID)
	wantEvent(t, sub, keystore.EventGenerated, keys[1].ID)
	leased := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	wantEvent(t, sub, keystore.EventAcquired, leased.ID)

	srv.shutdownSave()
	call := func(f func(context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return f(ctx)
	}
	wantCode(t, call(s.Ready), keystore.EUNAVAILABLE)
	wantCode(t, call(func(ctx context.Context) error { _, err := s.Get(ctx, leased.ID); return err }), keystore.EUNAVAILABLE)
	wantCode(t, call(func(ctx context.Context) error { _, err := s.Acquire(ctx, keystore.AcquireOptions{}); return err }), keystore.EUNAVAILABLE)
	wantCode(t, call(func(ctx context.Context) error { _, err := s.Stats(ctx, ""); return err }), keystore.EUNAVAILABLE)
	wantCode(t, call(func(ctx context.Context) error { _, err := s.Subscribe(ctx, keystore.SubscribeOptions{}); return err }), keystore.EUNAVAILABLE)

	srv.start()
	waitFor(t, func() bool { return call(s.Ready) == nil })
	got := must(s.Get(ctx, leased.ID))(t)
	if got.Lease == nil || got.Lease.Token != leased.Lease.Token {
		t.Fatalf("the lease did not survive the restart: %+v", got)
	}
	other := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	if other.Lease.Fence <= leased.Lease.Fence {
		t.Fatalf("fence %d after %d", other.Lease.Fence, leased.Lease.Fence)
	}
	// The reader follows the stream again, and the expirer applies the lease deadline.
	wantEvent(t, sub, keystore.EventAcquired, other.ID)
	clock.Advance(10 * time.Second)
	first := nextEvent(t, sub)
	second := nextEvent(t, sub)
	if first.Type != keystore.EventReleased || second.Type != keystore.EventReleased || first.Seq+1 != second.Seq {
		t.Fatalf("after the restart: %+v, %+v", first, second)
	}
}

// TestPoolLost: Redis loses the pool (here FLUSHALL; a restart without persistence is
// the same) and a new replica starts a new pool there. The old replica must not go on
// issuing ids and fences from the old pool's secret and restarted counters.
func TestPoolLost(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	old := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "lost")
	must(old.Generate(ctx, "", 2))(t)
	must(old.Acquire(ctx, keystore.AcquireOptions{}))(t)
	rdb := srv.client()
	defer rdb.Close()
	must(rdb.do("FLUSHALL").ToString())(t)

	_, err := old.Generate(ctx, "", 1)
	wantCode(t, err, keystore.EUNAVAILABLE)
	renewed := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "lost")
	k := must(renewed.Generate(ctx, "", 1))(t)[0]
	_, err = old.Generate(ctx, "", 1)
	wantCode(t, err, keystore.EUNAVAILABLE)
	_, err = old.Acquire(ctx, keystore.AcquireOptions{})
	wantCode(t, err, keystore.EUNAVAILABLE)
	if got := must(renewed.Acquire(ctx, keystore.AcquireOptions{}))(t); got.ID != k.ID {
		t.Fatalf("acquired %s, want %s", got.ID, k.ID)
	}
}

// TestLateReplicaReplays: a replica that starts after events were made loads them from
// the stream, so a subscription with After replays them there too.
func TestLateReplicaReplays(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	clock := newFakeClock()
	a := openNamespace(t, srv, clock, keystore.Options{}, "late")
	keys := must(a.Generate(ctx, "", 3))(t)
	must(a.Acquire(ctx, keystore.AcquireOptions{}))(t)

	b := openNamespace(t, srv, clock, keystore.Options{}, "late")
	after := int64(1)
	sub := must(b.Subscribe(ctx, keystore.SubscribeOptions{After: &after}))(t)
	for i, want := range []keystore.EventType{keystore.EventGenerated, keystore.EventGenerated, keystore.EventAcquired} {
		ev := nextEvent(t, sub)
		if ev.Seq != int64(i+2) || ev.Type != want {
			t.Fatalf("replayed event %d: %+v, want seq %d %s", i, ev, i+2, want)
		}
		if i < 2 && ev.KeyID != keys[i+1].ID {
			t.Fatalf("replayed event %d names %s, want %s", i, ev.KeyID, keys[i+1].ID)
		}
	}
	// Then live, from either replica.
	k := must(a.Generate(ctx, "", 1))(t)[0]
	wantEvent(t, sub, keystore.EventGenerated, k.ID)
}

// TestReplicasShareTheStream: replicas of one pool name its events' stream alike
// (the pool's id), so that a client that resumes on another replica is not told the
// stream changed; a pool made anew in another namespace has another.
func TestReplicasShareTheStream(t *testing.T) {
	a, b, _, _, srv := replicas(t, keystore.Options{})
	ctx := context.Background()
	subA := must(a.Subscribe(ctx, keystore.SubscribeOptions{}))(t)
	k := must(b.Generate(ctx, "", 1))(t)[0]
	ev := wantEvent(t, subA, keystore.EventGenerated, k.ID)
	if ev.Stream == "" {
		t.Fatal("an event without its stream")
	}
	after := ev.Seq
	if _, err := b.Subscribe(ctx, keystore.SubscribeOptions{After: &after, Stream: ev.Stream}); err != nil {
		t.Fatalf("resuming the stream on the other replica: %v", err)
	}
	other := openNamespace(t, srv, newFakeClock(), keystore.Options{}, fmt.Sprintf("pool%d", namespaces.Add(1)))
	_, err := other.Subscribe(ctx, keystore.SubscribeOptions{After: &after, Stream: ev.Stream})
	wantCode(t, err, keystore.ESTREAMCHANGED)
}
