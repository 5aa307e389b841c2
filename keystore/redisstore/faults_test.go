package redisstore

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestPoolLostRefusesEverything: Redis loses the pool (FLUSHALL here; a restart without
// persistence is the same) and a new replica makes a new pool there, whose keys are
// numbered from 1 again under another secret. The old replica's ids and tokens decode
// to the new pool's numbers and fences, so every call it makes must be refused, not
// only those that create ids: it must not free the new pool's leases nor delete its
// keys, must not say it is ready, and must not pass the new pool's events on.
func TestPoolLostRefusesEverything(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	old := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "lost")
	keys := must(old.Generate(ctx, "", 2))(t)
	held := must(old.Acquire(ctx, keystore.AcquireOptions{}))(t)
	sub := must(old.Subscribe(ctx, keystore.SubscribeOptions{}))(t)
	rdb := srv.client()
	defer rdb.Close()
	must(rdb.do("FLUSHALL").ToString())(t)

	renewed := openNamespace(t, srv, newFakeClock(), keystore.Options{}, "lost")
	fresh := must(renewed.Generate(ctx, "", 2))(t)
	leased := must(renewed.Acquire(ctx, keystore.AcquireOptions{}))(t)
	must(renewed.Generate(ctx, "", 1))(t) // events past the old replica's last seq

	for _, k := range keys {
		for _, token := range []string{"", held.Lease.Token} {
			_, err := old.Unblock(ctx, k.ID, token)
			wantCode(t, err, keystore.EUNAVAILABLE)
		}
		_, err := old.Renew(ctx, k.ID, held.Lease.Token, nil)
		wantCode(t, err, keystore.EUNAVAILABLE)
		_, err = old.KeepAlive(ctx, k.ID)
		wantCode(t, err, keystore.EUNAVAILABLE)
		_, err = old.Get(ctx, k.ID)
		wantCode(t, err, keystore.EUNAVAILABLE)
		wantCode(t, old.Delete(ctx, k.ID), keystore.EUNAVAILABLE)
	}
	_, err := old.Stats(ctx, "")
	wantCode(t, err, keystore.EUNAVAILABLE)
	_, err = old.Generate(ctx, "", 1)
	wantCode(t, err, keystore.EUNAVAILABLE)
	_, err = old.Acquire(ctx, keystore.AcquireOptions{})
	wantCode(t, err, keystore.EUNAVAILABLE)
	wantCode(t, old.Ready(ctx), keystore.EUNAVAILABLE)
	_, err = old.Subscribe(ctx, keystore.SubscribeOptions{})
	wantCode(t, err, keystore.EUNAVAILABLE)
	if err := old.Ready(ctx); err == nil || !strings.Contains(keystore.ErrorMessage(err), "restart") {
		t.Fatalf("Ready of the old replica: %v, want it to say to restart", err)
	}

	// The new pool is as its own replica left it.
	for _, k := range fresh {
		got := must(renewed.Get(ctx, k.ID))(t)
		if k.ID == leased.ID {
			if got.Lease == nil || got.Lease.Token != leased.Lease.Token {
				t.Fatalf("the new pool's lease of %s: %+v", k.ID, got.Lease)
			}
		} else if got.Status != keystore.Available {
			t.Fatalf("the new pool's key %s: %+v", k.ID, got)
		}
	}
	if st := must(renewed.Stats(ctx, ""))(t); st != (keystore.Stats{Total: 3, Available: 2, Blocked: 1}) {
		t.Fatalf("the new pool: %+v", st)
	}
	// The old replica's subscription ended without an event of the new pool.
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ev, err := sub.Next(waitCtx)
	if ev != nil {
		t.Fatalf("the old replica passed on an event of the new pool: %+v", *ev)
	}
	if err != nil {
		t.Fatalf("the old replica's subscription goes on: %v", err)
	}
}

// TestReadyFailsFast: /readyz gives the store 2 s; a paused Redis (SIGSTOP: the
// connections stay open, nothing answers) and a stopped one must both be reported
// well within that, not after the Redis client's 5 s default.
func TestReadyFailsFast(t *testing.T) {
	srv := startRedis(t)
	s := openStore(t, srv, newFakeClock(), keystore.Options{})
	probe := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // as rest.Readyz
		defer cancel()
		start := time.Now()
		err := s.Ready(ctx)
		elapsed := time.Since(start)
		wantCode(t, err, keystore.EUNAVAILABLE)
		if elapsed > readyTimeout+500*time.Millisecond {
			t.Fatalf("Ready with Redis %s failed after %v, want within %v", what, elapsed, readyTimeout)
		}
	}
	srv.pause()
	probe("paused")
	srv.resume()
	waitFor(t, func() bool { return s.Ready(context.Background()) == nil })
	srv.kill()
	probe("stopped")
}

// lostReply opens a store that talks to Redis through a proxy, with 2 keys.
func lostReply(t *testing.T) (*redisServer, *faultProxy, testStore) {
	srv := startRedis(t)
	px := startProxy(t, srv)
	s := openAt(t, px.url(), newFakeClock(), keystore.Options{}, "lost-reply")
	must(s.Generate(context.Background(), "", 2))(t)
	return srv, px, s
}

// TestLostReplyAcquire: the reply to an acquire is lost after Redis ran it. The store
// may send it again, but it must lease one key, not two.
func TestLostReplyAcquire(t *testing.T) {
	_, px, s := lostReply(t)
	ctx := context.Background()
	px.loseReplyTo(defaultLibrary.fn(scriptAcquire, false))
	k := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	require.EqualValues(t, 1, px.dropped.Load(), "replies lost")
	require.Equal(t, keystore.Stats{Total: 2, Available: 1, Blocked: 1}, must(s.Stats(ctx, ""))(t))
	got := must(s.Get(ctx, k.ID))(t)
	require.Equal(t, k.Lease.Token, got.Lease.Token, "the lease the caller got is the one that holds the key")
}

// TestLostReplyGenerate: generateKeys(count: 2) whose reply is lost creates 2 keys.
func TestLostReplyGenerate(t *testing.T) {
	_, px, s := lostReply(t)
	ctx := context.Background()
	px.loseReplyTo(defaultLibrary.fn(scriptGenerate, false))
	keys := must(s.Generate(ctx, "", 2))(t)
	require.Len(t, keys, 2)
	require.EqualValues(t, 1, px.dropped.Load(), "replies lost")
	require.Equal(t, 4, must(s.Stats(ctx, ""))(t).Total, "2 keys before, 2 generated")
}

// TestLostReplyUnblock: an unblock that succeeded but whose reply was lost is answered
// as the success it was, not NOT_BLOCKED.
func TestLostReplyUnblock(t *testing.T) {
	_, px, s := lostReply(t)
	ctx := context.Background()
	k := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)
	px.loseReplyTo(defaultLibrary.fn(scriptUnblock, false))
	got := must(s.Unblock(ctx, k.ID, k.Lease.Token))(t)
	require.Equal(t, keystore.Available, got.Status)
	require.EqualValues(t, 1, px.dropped.Load(), "replies lost")
}

// TestPausedAcquireLeavesNoOrphan: an acquire reaches a paused Redis and its caller
// gives up (its deadline passes): it is told UNAVAILABLE, so nobody holds the lease.
// When Redis resumes it may run the acquire it had queued; the key must not then stay
// BLOCKED with no holder until the lease runs out: the next client gets it.
func TestPausedAcquireLeavesNoOrphan(t *testing.T) {
	srv := startRedis(t)
	s := openStore(t, srv, newFakeClock(), keystore.Options{})
	ctx := context.Background()
	k := must(s.Generate(ctx, "", 1))(t)[0]

	srv.pause()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := s.Acquire(short, keystore.AcquireOptions{})
	cancel()
	srv.resume()
	wantCode(t, err, keystore.EUNAVAILABLE)

	// The wait is on the fake clock, which stands still: only the 5 s deadline ends it.
	next, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, err := s.Acquire(next, keystore.AcquireOptions{Wait: keystore.MaxWait})
	if err != nil {
		t.Fatalf("the next Acquire: %v; the key is left BLOCKED with no holder", err)
	}
	require.Equal(t, k.ID, got.ID)
	waitFor(t, func() bool { return s.b.pending() == 0 })
	held := must(s.Get(ctx, k.ID))(t)
	require.NotNil(t, held.Lease)
	require.Equal(t, got.Lease.Token, held.Lease.Token, "the key is held by the lease its caller got")
}

// TestKillUnderLoad: Redis (append-only, fsync'd before each reply) is killed with
// SIGKILL and restarted three times while two replicas cycle acquire/unblock. Every
// worker frees what it was told it holds (repeating an unblock of unknown outcome
// until it is answered); afterwards no key may stay BLOCKED without a holder.
func TestKillUnderLoad(t *testing.T) {
	const keys, workers = 8, 8
	srv := startRedisAOF(t)
	clock := newFakeClock()
	a := openNamespace(t, srv, clock, keystore.Options{}, "kill")
	b := openNamespace(t, srv, clock, keystore.Options{}, "kill")
	ctx := context.Background()
	must(a.Generate(ctx, "", keys))(t)

	var (
		stop   atomic.Bool
		cycles atomic.Int64
		wg     sync.WaitGroup
	)
	for i := range workers {
		store := []testStore{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				k, err := store.Acquire(ctx, keystore.AcquireOptions{})
				if err != nil {
					if c := keystore.ErrorCode(err); c != keystore.ENOTFOUND && c != keystore.EUNAVAILABLE {
						t.Errorf("Acquire: %v", err)
						return
					}
					continue
				}
				for {
					_, err := store.Unblock(ctx, k.ID, k.Lease.Token)
					if keystore.ErrorCode(err) != keystore.EUNAVAILABLE {
						// Answered at last; NOT_BLOCKED or LEASE_MISMATCH: an earlier try of
						// unknown outcome had freed it.
						if c := keystore.ErrorCode(err); err != nil && c != keystore.ENOTBLOCKED && c != keystore.ELEASEMISMATCH {
							t.Errorf("Unblock of our own lease: %v", err)
						}
						break
					}
				}
				cycles.Add(1)
			}
		}()
	}
	for range 3 {
		next := cycles.Load() + 200
		waitFor(t, func() bool { return cycles.Load() >= next })
		srv.kill()
		srv.start()
	}
	next := cycles.Load() + 200
	waitFor(t, func() bool { return cycles.Load() >= next })
	stop.Store(true)
	wg.Wait()
	want := keystore.Stats{Total: keys, Available: keys}
	require.Eventually(t, func() bool {
		st, err := a.Stats(ctx, "")
		return err == nil && st == want
	}, 10*time.Second, 10*time.Millisecond, "keys left BLOCKED with no holder")
	t.Logf("%d cycles", cycles.Load())
}
