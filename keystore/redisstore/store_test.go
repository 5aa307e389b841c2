package redisstore

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// must checks a call's error: must(s.Get(ctx, id))(t).
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return v
	}
}

func wantCode(t testing.TB, err error, code keystore.Code) {
	t.Helper()
	if got := keystore.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

// nextEvent waits (real time, for delivery only) for the next event of sub.
func nextEvent(t testing.TB, sub *keystore.Subscription) keystore.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := sub.Next(ctx)
	if ev == nil {
		t.Fatalf("no event within 5s: %v", err)
	}
	return *ev
}

func wantEvent(t testing.TB, sub *keystore.Subscription, typ keystore.EventType, id string) keystore.Event {
	t.Helper()
	ev := nextEvent(t, sub)
	if ev.Type != typ || ev.KeyID != id {
		t.Fatalf("event = %s %s, want %s %s", ev.Type, ev.KeyID, typ, id)
	}
	return ev
}

// TestLifecycle walks one key through the rules of the contract on a fake clock.
func TestLifecycle(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	s := openStore(t, srv, clock, keystore.Options{LeaseTTL: 10 * time.Second, KeepAliveTTL: time.Minute})
	ctx := context.Background()
	start := clock.Now()
	sub := must(s.Subscribe(ctx, keystore.SubscribeOptions{}))(t)

	keys := must(s.Generate(ctx, "", 1))(t)
	k := keys[0]
	if len(k.ID) < 20 || k.Status != keystore.Available || !k.CreatedAt.Equal(start) || !k.ExpiresAt.Equal(start.Add(time.Minute)) {
		t.Fatalf("generated %+v", k)
	}
	wantEvent(t, sub, keystore.EventGenerated, k.ID)

	got := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	if got.ID != k.ID || got.Status != keystore.Blocked || got.Lease == nil ||
		!got.Lease.ExpiresAt.Equal(start.Add(10*time.Second)) || got.History.TimesAcquired != 1 {
		t.Fatalf("acquired %+v", got)
	}
	wantEvent(t, sub, keystore.EventAcquired, k.ID)
	_, err := s.Acquire(ctx, keystore.AcquireOptions{})
	wantCode(t, err, keystore.ENOTFOUND)

	_, err = s.Unblock(ctx, k.ID, s.b.ids.Token(mustKeyNumber(t, s.b.ids, k.ID), got.Lease.Fence+1))
	wantCode(t, err, keystore.ELEASEMISMATCH)
	_, err = s.Unblock(ctx, k.ID, "garbage")
	wantCode(t, err, keystore.ELEASEMISMATCH)

	renewed := must(s.Renew(ctx, k.ID, got.Lease.Token, keystore.TTL(20*time.Second)))(t)
	if !renewed.Lease.ExpiresAt.Equal(start.Add(20 * time.Second)) {
		t.Fatalf("renewed lease ends %v", renewed.Lease.ExpiresAt)
	}

	// The lease runs out: a request just after the deadline sees it done, the expirer
	// announces it.
	clock.Advance(20 * time.Second)
	after := must(s.Get(ctx, k.ID))(t)
	if after.Status != keystore.Available || after.History.LeasesExpired != 1 {
		t.Fatalf("after the lease: %+v", after)
	}
	ev := wantEvent(t, sub, keystore.EventReleased, k.ID)
	if !ev.At.Equal(start.Add(20 * time.Second)) {
		t.Fatalf("RELEASED at %v", ev.At)
	}
	_, err = s.Renew(ctx, k.ID, got.Lease.Token, nil)
	wantCode(t, err, keystore.ENOTBLOCKED)
	_, err = s.Unblock(ctx, k.ID, "")
	wantCode(t, err, keystore.ENOTBLOCKED)

	second := must(s.Acquire(ctx, keystore.AcquireOptions{TTL: keystore.TTL(5 * time.Second)}))(t)
	wantEvent(t, sub, keystore.EventAcquired, k.ID)
	if second.Lease.Fence <= got.Lease.Fence {
		t.Fatalf("fence %d after %d", second.Lease.Fence, got.Lease.Fence)
	}
	_, err = s.Renew(ctx, k.ID, got.Lease.Token, nil)
	wantCode(t, err, keystore.ELEASEMISMATCH)
	must(s.Unblock(ctx, k.ID, second.Lease.Token))(t)
	wantEvent(t, sub, keystore.EventUnblocked, k.ID)

	// Keep-alive: moved by KeepAlive only, then the key is deleted for good.
	clock.Advance(30 * time.Second)
	kept := must(s.KeepAlive(ctx, k.ID))(t)
	if !kept.ExpiresAt.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("kept alive until %v", kept.ExpiresAt)
	}
	clock.Advance(time.Minute - time.Microsecond)
	must(s.Get(ctx, k.ID))(t) // never early
	clock.Advance(time.Microsecond)
	ev = wantEvent(t, sub, keystore.EventExpired, k.ID)
	if !ev.At.Equal(kept.ExpiresAt) {
		t.Fatalf("EXPIRED at %v, want %v", ev.At, kept.ExpiresAt)
	}
	_, err = s.Get(ctx, k.ID)
	wantCode(t, err, keystore.ENOTFOUND)
	wantCode(t, s.Delete(ctx, k.ID), keystore.ENOTFOUND)
	_, err = s.KeepAlive(ctx, "not-an-id-of-this-pool-at-all")
	wantCode(t, err, keystore.ENOTFOUND)

	st := must(s.Stats(ctx, ""))(t)
	if st != (keystore.Stats{}) {
		t.Fatalf("stats %+v", st)
	}
	_, err = s.Generate(ctx, "", 0)
	wantCode(t, err, keystore.EINVALID)
	_, err = s.Acquire(ctx, keystore.AcquireOptions{TTL: keystore.TTL(time.Millisecond)})
	wantCode(t, err, keystore.EINVALID)
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDueBeforeExpirer checks that a request made after a deadline sees the
// transition as done even if no expirer has run: the scripts settle it themselves.
func TestDueBeforeExpirer(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	s := openStore(t, srv, clock, keystore.Options{LeaseTTL: 10 * time.Second})
	ctx := context.Background()
	k := must(s.Generate(ctx, "", 1))(t)[0]
	must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	// Stop the expirer (and the other loops) but keep the client open, then move time:
	// only the scripts themselves can apply the deadline now.
	s.b.cancel()
	s.b.wg.Wait()
	clock.Advance(10 * time.Second)
	st := must(s.Stats(context.Background(), ""))(t)
	if st.Available != 1 || st.Blocked != 0 {
		t.Fatalf("stats after the lease: %+v", st)
	}
	got := must(s.Get(ctx, k.ID))(t)
	if got.History.LeasesExpired != 1 {
		t.Fatalf("history %+v", got.History)
	}
}

func TestCloseEndsWaitersAndSubscriptions(t *testing.T) {
	srv := startRedis(t)
	s := openStore(t, srv, newFakeClock(), keystore.Options{})
	ctx := context.Background()
	sub := must(s.Subscribe(ctx, keystore.SubscribeOptions{}))(t)
	done := make(chan error, 1)
	go func() {
		_, err := s.Acquire(ctx, keystore.AcquireOptions{Wait: 10 * time.Second})
		done <- err
	}()
	waitFor(t, func() bool { return s.b.lanes.Made(keystore.DefaultPool).Waiters.Len() == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		wantCode(t, err, keystore.EUNAVAILABLE)
	case <-time.After(5 * time.Second):
		t.Fatal("waiter still waiting after Close")
	}
	if ev, _ := sub.Next(ctx); ev != nil {
		t.Fatal("event after Close")
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("subscription error %v", err)
	}
	wantCode(t, s.Ready(ctx), keystore.EUNAVAILABLE)
	_, err := s.Generate(ctx, "", 1)
	wantCode(t, err, keystore.EUNAVAILABLE)
}

// waitFor polls cond (real time) for things another goroutine does soon, such as
// queueing a waiter; never for a TTL rule, which tests drive with the fake clock.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, time.Millisecond, "condition not met within 5s")
}

// TestScriptErrorIsInternal: a script that fails at run time is a bug, not an outage:
// it must not be reported as UNAVAILABLE (a client would retry forever).
func TestScriptErrorIsInternal(t *testing.T) {
	srv := startRedis(t)
	s := openStore(t, srv, newFakeClock(), keystore.Options{})
	ctx := context.Background()
	must(s.Generate(ctx, "", 1))(t)
	p := s.b.reg.get(keystore.DefaultPool)
	_, _, err := s.b.run(ctx, p, scriptUnblock, mutation, "not a number", 0)
	wantCode(t, err, keystore.EINTERNAL)
	srv.kill()
	_, _, err = s.b.run(ctx, p, scriptUnblock, mutation, 1, 0)
	wantCode(t, err, keystore.EUNAVAILABLE)
}

// TestLibraryLoadedAgain: a Redis that lost keypool's library (a restart without
// persistence, FUNCTION FLUSH) has it loaded again by the first request that misses
// it, which then runs; and a replica starting deletes the libraries of other keypool
// versions, not its own nor anyone else's.
func TestLibraryLoadedAgain(t *testing.T) {
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	old := "#!lua name=" + libraryPrefix + "000000000000\nredis.register_function('kp000000000000_check', function() return 1 end)"
	must(rdb.do("FUNCTION", "LOAD", old).ToString())(t)
	must(rdb.do("FUNCTION", "LOAD", "#!lua name=theirs\nredis.register_function('theirs_f', function() return 1 end)").ToString())(t)
	s := openStore(t, srv, newFakeClock(), keystore.Options{})
	libraries := func() []string {
		var names []string
		for _, lib := range must(rdb.do("FUNCTION", "LIST").ToArray())(t) {
			info := must(lib.AsMap())(t)
			m := info["library_name"]
			names = append(names, must(m.ToString())(t))
		}
		slices.Sort(names)
		return names
	}
	require.Equal(t, []string{defaultLibrary.name, "theirs"}, libraries())

	must(s.Generate(ctx, "", 2))(t)
	must(rdb.do("FUNCTION", "FLUSH").ToString())(t)
	require.Empty(t, libraries())
	k := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	require.NotNil(t, k.Lease)
	require.Equal(t, []string{defaultLibrary.name}, libraries())
}

func TestNew(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	s, b, err := open(ctx, srv.url()+"?namespace=fromurl", newFakeClock(), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if b.nsPrefix != "{fromurl}:" {
		t.Fatalf("prefix %q", b.nsPrefix)
	}
	must(s.Generate(ctx, "", 1))(t)
	rdb := srv.client()
	defer rdb.Close()
	if n := must(rdb.do("ZCARD", "{fromurl:default}:alive").AsInt64())(t); n != 1 {
		t.Fatalf("%d keys under the URL's namespace", n)
	}

	// A replica on Redis's clock must not join a pool kept on a test clock.
	_, err = New(ctx, srv.url(), clockwork.NewRealClock(), keystore.Options{}, WithNamespace("fromurl"))
	if err == nil || !strings.Contains(err.Error(), "keeps time") {
		t.Fatalf("joining a pool on another clock: %v", err)
	}
	for _, bad := range []string{"http://localhost:6379", "redis://[::1", srv.url() + "?namespace={x}"} {
		if _, err := New(ctx, bad, newFakeClock(), keystore.Options{}); err == nil {
			t.Fatalf("New(%q) succeeded", bad)
		}
	}
	if _, err := New(ctx, srv.url(), newFakeClock(), keystore.Options{MaxLeaseTTL: time.Second, LeaseTTL: time.Minute}); err == nil {
		t.Fatal("New accepted a lease TTL over the max")
	}
	// Redis down at start: UNAVAILABLE, nothing left running (goleak checks).
	_, err = New(ctx, "unix://"+t.TempDir()+"/none.sock", newFakeClock(), keystore.Options{})
	wantCode(t, err, keystore.EUNAVAILABLE)
}

// TestTimerUntil: the expirer's timer fires at the deadline, to the unit, on the store's
// clock (and not merely at the fallback tick).
func TestTimerUntil(t *testing.T) {
	srv := startRedis(t)
	clock := newFakeClock()
	s := openStore(t, srv, clock, keystore.Options{})
	deadline := s.b.localNow() + s.b.units(1500*time.Millisecond)
	timer, fired := s.b.timerUntil(deadline)
	defer timer.Stop()
	clock.Advance(1500*time.Millisecond - time.Nanosecond)
	select {
	case <-fired:
		t.Fatal("the timer fired early")
	default:
	}
	clock.Advance(time.Nanosecond)
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("the timer did not fire at the deadline")
	}
	if timer, fired := s.b.timerUntil(math.MaxInt64); timer != nil || fired != nil {
		t.Fatal("a timer for no deadline")
	}
}

// TestAcquireIsUniform: each AVAILABLE key is picked about as often as any other, with
// the AVAILABLE set in the encoding large pools use (a skip list, not a listpack). The
// conformance suite checks the same on 2000 keys with a chi-square test.
func TestAcquireIsUniform(t *testing.T) {
	const keys, picks = 8, 4000
	srv := startRedis(t)
	rdb := srv.client()
	defer rdb.Close()
	ctx := context.Background()
	must(rdb.do("CONFIG", "SET", "zset-max-listpack-entries", "1").ToString())(t)
	s := openStore(t, srv, newFakeClock(), keystore.Options{})
	must(s.Generate(ctx, "", keys))(t)
	if enc := must(rdb.do("OBJECT", "ENCODING", s.b.reg.get(keystore.DefaultPool).prefix+"avail").ToString())(t); enc != "skiplist" {
		t.Fatalf("AVAILABLE set encoded as %s", enc)
	}
	counts := map[string]int{}
	for range picks {
		k := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
		counts[k.ID]++
		must(s.Unblock(ctx, k.ID, k.Lease.Token))(t)
	}
	// Expected 500 each, standard deviation about 21: 400..600 is ±4.7σ.
	if len(counts) != keys {
		t.Fatalf("only %d of %d keys were ever picked: %v", len(counts), keys, counts)
	}
	for id, n := range counts {
		if n < 400 || n > 600 {
			t.Fatalf("key %s picked %d times of %d, want about %d: %v", id, n, picks, picks/keys, counts)
		}
	}
}

// mustKeyNumber returns the number behind a key id of ids.
func mustKeyNumber(t *testing.T, ids *keystore.IDCodec, id string) uint64 {
	t.Helper()
	n, ok := ids.ParseKeyID(id)
	require.True(t, ok, "not a key id: %q", id)
	return n
}
