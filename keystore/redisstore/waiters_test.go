package redisstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/keypool/keypool/keystore"
)

// acquired is the outcome of an Acquire run in another goroutine.
type acquired struct {
	key keystore.Key
	err error
}

func acquireIn(ctx context.Context, s testStore, opts keystore.AcquireOptions) <-chan acquired {
	done := make(chan acquired, 1)
	go func() {
		k, err := s.Acquire(ctx, opts)
		done <- acquired{k, err}
	}()
	return done
}

// served waits (real time, for delivery only) for a waiter to be served key want.
func served(t *testing.T, done <-chan acquired, want keystore.Key, what string) {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil || r.key.ID != want.ID || r.key.Lease == nil || r.key.Lease.Fence <= want.Lease.Fence {
			t.Fatalf("%s got %+v, %v; want a new lease of %s", what, r.key, r.err, want.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s was not served the key freed while it was first in line", what)
	}
}

// TestWaiterGetsKeyFreedAfterItsTry: a waiting Acquire's try finds no key,
// and a key comes free before that Acquire has returned (an unblock on this replica or
// another, a lease that runs out). The waiter is in line from the step that found no
// key, as keystore.Backend promises, so the key is its: a fresh Acquire without a wait
// made on this replica in that moment answers NOT_FOUND, and the waiter gets the key.
func TestWaiterGetsKeyFreedAfterItsTry(t *testing.T) {
	const leaseTTL = 10 * time.Second
	cases := []struct {
		name string
		free func(ctx context.Context, t *testing.T, here, other testStore, clock *clockwork.FakeClock, held keystore.Key)
	}{
		{"unblocked on this replica", func(ctx context.Context, t *testing.T, here, _ testStore, _ *clockwork.FakeClock, held keystore.Key) {
			must(here.Unblock(ctx, held.ID, held.Lease.Token))(t)
		}},
		{"unblocked on another replica", func(ctx context.Context, t *testing.T, _, other testStore, _ *clockwork.FakeClock, held keystore.Key) {
			must(other.Unblock(ctx, held.ID, held.Lease.Token))(t)
		}},
		{"its lease runs out", func(_ context.Context, _ *testing.T, _, _ testStore, clock *clockwork.FakeClock, _ keystore.Key) {
			clock.Advance(leaseTTL)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := startRedis(t)
			clock := newFakeClock()
			ns := fmt.Sprintf("w%d", namespaces.Add(1))
			opts := keystore.Options{LeaseTTL: leaseTTL}
			ctx := context.Background()

			var here, other testStore
			var held keystore.Key
			var fired atomic.Bool
			var fresh acquired
			tried := make(chan struct{})
			afterTry := func() {
				if fired.Swap(true) {
					return
				}
				defer close(tried)
				c.free(ctx, t, here, other, clock, held)
				fresh.key, fresh.err = here.Acquire(ctx, keystore.AcquireOptions{})
			}
			here = openNamespace(t, srv, clock, opts, ns, withAfterFailedTry(afterTry))
			other = openNamespace(t, srv, clock, opts, ns)
			must(here.Generate(ctx, "", 1))(t)
			held = must(here.Acquire(ctx, keystore.AcquireOptions{}))(t)

			waiter := acquireIn(ctx, here, keystore.AcquireOptions{Wait: 2 * leaseTTL})
			select {
			case <-tried:
			case <-time.After(5 * time.Second):
				t.Fatal("the waiting Acquire's try never found the pool empty")
			}
			if fresh.err == nil {
				t.Errorf("a fresh Acquire took key %s, freed after the waiter's try found none; want NOT_FOUND", fresh.key.ID)
			} else {
				wantCode(t, fresh.err, keystore.ENOTFOUND)
			}
			served(t, waiter, held, "the waiter")
			if st := must(here.Stats(ctx, ""))(t); st != (keystore.Stats{Total: 1, Blocked: 1}) {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestWaiterJoiningDuringATryStaysBehind: a waiter that comes while the first waiter's
// own try is under way is behind it in line, so a key freed after that try found none
// goes to the first.
func TestWaiterJoiningDuringATryStaysBehind(t *testing.T) {
	srv := startRedis(t)
	obs := &countingObserver{}
	ctx := context.Background()
	var fired atomic.Bool
	inTry, proceed := make(chan struct{}), make(chan struct{})
	afterTry := func() { // the first waiter's try only
		if !fired.Swap(true) {
			close(inTry)
			<-proceed
		}
	}
	s := openStore(t, srv, newFakeClock(), keystore.Options{Observer: obs}, withAfterFailedTry(afterTry))
	release := sync.OnceFunc(func() { close(proceed) })
	t.Cleanup(release) // before the store closes, should the test end early
	must(s.Generate(ctx, "", 1))(t)
	held := must(s.Acquire(ctx, keystore.AcquireOptions{}))(t)

	first := acquireIn(ctx, s, keystore.AcquireOptions{Wait: keystore.MaxWait})
	select {
	case <-inTry:
	case <-time.After(5 * time.Second):
		t.Fatal("the first waiter's try never found the pool empty")
	}
	second := acquireIn(ctx, s, keystore.AcquireOptions{Wait: keystore.MaxWait})
	waitFor(t, func() bool { return obs.waiting.Load() == 1 }) // the second is in line
	must(s.Unblock(ctx, held.ID, held.Lease.Token))(t)
	release()
	served(t, first, held, "the first waiter")
	select {
	case r := <-second:
		t.Fatalf("the second waiter returned %+v, %v", r.key, r.err)
	default:
	}
}

// TestFreshAcquireTakesKeyNotOwed: the keys left to waiters are only as many as wait.
// Two keys come free while one waiter's try is under way: a fresh Acquire gets one,
// the waiter the other.
func TestFreshAcquireTakesKeyNotOwed(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	var s testStore
	var held []keystore.Key
	var fired atomic.Bool
	var fresh acquired
	tried := make(chan struct{})
	afterTry := func() {
		if fired.Swap(true) {
			return
		}
		defer close(tried)
		for _, k := range held {
			must(s.Unblock(ctx, k.ID, k.Lease.Token))(t)
		}
		fresh.key, fresh.err = s.Acquire(ctx, keystore.AcquireOptions{})
	}
	s = openStore(t, srv, newFakeClock(), keystore.Options{}, withAfterFailedTry(afterTry))
	must(s.Generate(ctx, "", 2))(t)
	held = append(held, must(s.Acquire(ctx, keystore.AcquireOptions{}))(t), must(s.Acquire(ctx, keystore.AcquireOptions{}))(t))

	waiter := acquireIn(ctx, s, keystore.AcquireOptions{Wait: keystore.MaxWait})
	select {
	case <-tried:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting Acquire's try never found the pool empty")
	}
	if fresh.err != nil {
		t.Fatalf("a fresh Acquire with two keys free and one waiter: %v", fresh.err)
	}
	select {
	case r := <-waiter:
		if r.err != nil || r.key.ID == fresh.key.ID {
			t.Fatalf("the waiter got %+v, %v; the fresh Acquire %s", r.key, r.err, fresh.key.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was not served")
	}
	if st := must(s.Stats(ctx, ""))(t); st != (keystore.Stats{Total: 2, Blocked: 2}) {
		t.Fatalf("stats %+v", st)
	}
}

// changesObserver counts the Observer's calls about waiters.
type changesObserver struct {
	keystore.NopObserver
	changes atomic.Int64
}

func (o *changesObserver) WaitersChanged(int) { o.changes.Add(1) }

// TestConcurrentWaitersWithKeysFree: waiting Acquires that come together while keys
// are free each take one on their own try, at once (each leaves a key to each of
// those before it, and enough are free): none waits, none goes through the
// dispatcher one after another.
func TestConcurrentWaitersWithKeysFree(t *testing.T) {
	const clients = 32
	srv := startRedis(t)
	obs := &changesObserver{}
	s := openStore(t, srv, newFakeClock(), keystore.Options{Observer: obs})
	ctx := context.Background()
	must(s.Generate(ctx, "", 2*clients))(t)
	var results []<-chan acquired
	for range clients {
		results = append(results, acquireIn(ctx, s, keystore.AcquireOptions{Wait: keystore.MaxWait}))
	}
	ids := map[string]bool{}
	for _, done := range results {
		select {
		case r := <-done:
			if r.err != nil || ids[r.key.ID] {
				t.Fatalf("got %+v, %v", r.key, r.err)
			}
			ids[r.key.ID] = true
		case <-time.After(5 * time.Second):
			t.Fatal("a waiting Acquire did not return")
		}
	}
	if n := obs.changes.Load(); n != 0 {
		t.Fatalf("the waiting count changed %d times: an Acquire waited with keys free", n)
	}
}
