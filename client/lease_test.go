package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/keystore"
)

// leaseEnv runs the Lease helper on a fake clock of its own, against a server on
// another fake clock, three hours ahead: the helper must never compare the two.
// Tests move both clocks together, as real time moves.
type leaseEnv struct {
	ts     *testServer
	server *clockwork.FakeClock
	local  *clockwork.FakeClock
	c      *client.Client
}

func newLeaseEnv(t *testing.T, opts keystore.Options, keys int) *leaseEnv {
	t.Helper()
	server := clockwork.NewFakeClock()
	local := clockwork.NewFakeClockAt(server.Now().Add(-3 * time.Hour))
	ts := newTestServer(t, server, opts)
	e := &leaseEnv{ts: ts, server: server, local: local, c: ts.client(t, client.WithClock(local))}
	if keys > 0 {
		_, err := ts.store.Generate(context.Background(), "", keys)
		require.NoError(t, err)
	}
	return e
}

// settle waits until the lease's background loop waits on the local clock again,
// or has ended.
func (e *leaseEnv) settle(t *testing.T, l *client.Lease) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	blocked := make(chan error, 1)
	go func() { blocked <- e.local.BlockUntilContext(ctx, 1) }()
	select {
	case err := <-blocked:
		require.NoError(t, err, "the lease's loop never waited")
	case <-l.Done():
		cancel()
		<-blocked
	}
}

// step moves both clocks by d and lets the lease act on it.
func (e *leaseEnv) step(t *testing.T, l *client.Lease, d time.Duration) {
	t.Helper()
	e.server.Advance(d)
	e.local.Advance(d)
	e.settle(t, l)
}

// steps moves both clocks n times by d, checking after each that the server holds
// the key under l, and stops early if the lease ends.
func (e *leaseEnv) steps(t *testing.T, l *client.Lease, n int, d time.Duration) {
	t.Helper()
	for range n {
		e.step(t, l, d)
		if isDone(l) {
			return
		}
		e.requireHeld(t, l)
	}
}

func (e *leaseEnv) requireHeld(t *testing.T, l *client.Lease) {
	t.Helper()
	key, err := e.ts.store.Get(context.Background(), l.KeyID())
	require.NoError(t, err)
	require.Equal(t, keystore.Blocked, key.Status, "the server holds the key")
	require.Equal(t, l.Token(), key.Lease.Token, "under our lease")
}

func isDone(l *client.Lease) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

func (e *leaseEnv) lease(t *testing.T, opts client.AcquireOptions) *client.Lease {
	t.Helper()
	l, err := e.c.Lease(context.Background(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	e.settle(t, l)
	return l
}

// TestLeaseRenewsAcrossTTLs holds a 30s lease for five of its lengths: it is renewed
// when a third is left (at 20s, 40s, …), and the server holds the key throughout.
func TestLeaseRenewsAcrossTTLs(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second, KeepAliveTTL: 10 * time.Minute}, 1)
	l := e.lease(t, client.AcquireOptions{TTL: 30 * time.Second})
	assert.Equal(t, 1, e.ts.count("KeepAlive"), "the key is kept alive at once")
	assert.Equal(t, 0, e.ts.count("RenewLease"))
	assert.Positive(t, l.Fence())

	e.steps(t, l, 19, time.Second)
	assert.Equal(t, 0, e.ts.count("RenewLease"), "not renewed before a third of it is left")
	e.steps(t, l, 1, time.Second)
	require.Equal(t, 1, e.ts.count("RenewLease"), "renewed when a third is left")
	assert.Equal(t, "30s", e.ts.last(t, "RenewLease")["ttl"], "renewed for the ttl asked")
	assert.WithinDuration(t, e.server.Now().Add(30*time.Second), l.Info().ExpiresAt, 0)

	e.steps(t, l, 130, time.Second) // to 150s: five lengths of the lease
	require.False(t, isDone(l), "lost: %v", l.Err())
	assert.Equal(t, 7, e.ts.count("RenewLease"), "one renewal per 20s")

	require.NoError(t, l.Release(context.Background()))
	key, err := e.ts.store.Get(context.Background(), l.KeyID())
	require.NoError(t, err)
	assert.Equal(t, keystore.Available, key.Status, "released at once")
	assert.Zero(t, key.History.LeasesExpired, "it never ran out")
	assert.ErrorIs(t, l.Err(), client.ErrReleased)
	assert.True(t, isDone(l))
	assert.Error(t, l.Context().Err())
	assert.NoError(t, l.Release(context.Background()), "a second Release says the same")
}

// TestLeaseDefaultTTL: with no ttl given, none is sent, on acquire or renewal.
func TestLeaseDefaultTTL(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second}, 1)
	l := e.lease(t, client.AcquireOptions{})
	assert.NotContains(t, e.ts.last(t, "AcquireKey"), "ttl")
	e.steps(t, l, 20, time.Second)
	require.Equal(t, 1, e.ts.count("RenewLease"), "renewed when a third of the server's default is left")
	assert.NotContains(t, e.ts.last(t, "RenewLease"), "ttl")
	e.steps(t, l, 40, time.Second)
	assert.False(t, isDone(l))
}

// TestLeaseKeepsKeyAlive holds a key for five keep-alive TTLs; a key nobody keeps
// alive expires meanwhile.
func TestLeaseKeepsKeyAlive(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second, KeepAliveTTL: time.Minute}, 2)
	l := e.lease(t, client.AcquireOptions{})
	e.steps(t, l, 300, time.Second)
	require.False(t, isDone(l), "lost: %v", l.Err())
	stats, err := e.ts.store.Stats(context.Background(), "")
	require.NoError(t, err)
	assert.Equal(t, keystore.Stats{Total: 1, Blocked: 1}, stats, "the other key expired, ours lives")
	assert.GreaterOrEqual(t, e.ts.count("KeepAlive"), 300/40, "kept alive when a third of its TTL is left")
}

// TestLeaseLost: another client takes the lease away; the holder learns it at the
// next renewal, with the server's code.
func TestLeaseLost(t *testing.T) {
	for name, tc := range map[string]struct {
		takeAway func(e *leaseEnv, l *client.Lease) error
		code     client.Code
	}{
		"deleted": {
			func(e *leaseEnv, l *client.Lease) error {
				return e.ts.store.Delete(context.Background(), l.KeyID())
			},
			client.ErrNotFound,
		},
		"unblocked and acquired by another": {
			func(e *leaseEnv, l *client.Lease) error {
				if _, err := e.ts.store.Unblock(context.Background(), l.KeyID(), ""); err != nil {
					return err
				}
				_, err := e.ts.store.Acquire(context.Background(), keystore.AcquireOptions{})
				return err
			},
			client.ErrLeaseMismatch,
		},
		"unblocked": {
			func(e *leaseEnv, l *client.Lease) error {
				_, err := e.ts.store.Unblock(context.Background(), l.KeyID(), "")
				return err
			},
			client.ErrNotBlocked,
		},
	} {
		t.Run(name+", told by the key's events", func(t *testing.T) {
			e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second}, 1)
			l := e.lease(t, client.AcquireOptions{})
			e.steps(t, l, 1, time.Second)
			e.ts.waitSubscribers(t, 1) // the lease follows its key
			taken := time.Now()
			require.NoError(t, tc.takeAway(e, l))
			select { // no clock moves: only the event can tell
			case <-l.Done():
			case <-time.After(time.Second):
				t.Fatal("the loss was not reported within a second")
			}
			t.Logf("reported %v after the key was taken", time.Since(taken))
			err := l.Err()
			assert.ErrorIs(t, err, client.ErrLeaseLost)
			assert.ErrorIs(t, err, client.ErrLeaseTaken)
			assert.Equal(t, err, l.Release(context.Background()), "Release reports the loss")
			if tc.code == client.ErrLeaseMismatch {
				key, err := e.ts.store.Get(context.Background(), l.KeyID())
				require.NoError(t, err)
				assert.Equal(t, keystore.Blocked, key.Status, "Release leaves the other holder's lease alone")
			}
		})
		t.Run(name+", found by the renewal without a stream", func(t *testing.T) {
			e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second}, 1)
			e.ts.noStreams.Store(true)
			l := e.lease(t, client.AcquireOptions{})
			e.steps(t, l, 5, time.Second)
			require.NoError(t, tc.takeAway(e, l))
			for range 14 {
				e.step(t, l, time.Second)
			}
			require.False(t, isDone(l), "the loss cannot be known before the renewal")
			e.step(t, l, time.Second) // 20s: the renewal
			select {
			case <-l.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the loss was not reported")
			}
			err := l.Err()
			assert.ErrorIs(t, err, client.ErrLeaseLost)
			assert.ErrorIs(t, err, tc.code)
			assert.ErrorIs(t, context.Cause(l.Context()), client.ErrLeaseLost)
			assert.Equal(t, err, l.Release(context.Background()), "Release reports the loss")
			if tc.code == client.ErrLeaseMismatch {
				key, err := e.ts.store.Get(context.Background(), l.KeyID())
				require.NoError(t, err)
				assert.Equal(t, keystore.Blocked, key.Status, "Release leaves the other holder's lease alone")
			}
		})
	}
}

// TestLeaseRetriesTransientErrors: while the server answers UNAVAILABLE, the
// renewal is retried with backoff; once it answers again, the lease lives on.
func TestLeaseRetriesTransientErrors(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second}, 1)
	l := e.lease(t, client.AcquireOptions{})
	e.ts.down.Store(true)
	e.steps(t, l, 20, time.Second)
	e.steps(t, l, 30, 100*time.Millisecond) // to 23s
	failed := e.ts.count("RenewLease")
	assert.GreaterOrEqual(t, failed, 4, "retried")
	assert.LessOrEqual(t, failed, 6, "with backoff: 100ms, 200ms, 400ms, 800ms, 1.6s")
	assert.False(t, isDone(l))

	e.ts.down.Store(false)
	e.steps(t, l, 30, 100*time.Millisecond) // to 26s
	assert.Equal(t, failed+1, e.ts.count("RenewLease"), "the next retry succeeds")
	e.steps(t, l, 30, time.Second) // past the first lease's end
	require.False(t, isDone(l), "lost: %v", l.Err())
}

// TestLeaseExpiresWithoutRenewal: a server that never answers lets the lease run
// out; the holder is told at its deadline, not later, and not sooner.
func TestLeaseExpiresWithoutRenewal(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second}, 1)
	e.ts.noStreams.Store(true) // nor does it stream the key's events
	l := e.lease(t, client.AcquireOptions{})
	e.ts.down.Store(true)
	for range 29 {
		e.step(t, l, time.Second)
	}
	e.step(t, l, 999*time.Millisecond)
	require.False(t, isDone(l), "still within the lease: %v", l.Err())
	e.step(t, l, time.Millisecond)
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the expiry was not reported")
	}
	assert.ErrorIs(t, l.Err(), client.ErrLeaseLost)
	assert.ErrorIs(t, l.Err(), client.ErrLeaseExpired)
	assert.Contains(t, l.Err().Error(), "UNAVAILABLE", "with the last error")
}

// TestLeaseMaxLeaseTTL: renewals stop extending a lease at the server's max lease
// TTL; the holder is told when it runs out.
func TestLeaseMaxLeaseTTL(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second, MaxLeaseTTL: time.Minute}, 1)
	l := e.lease(t, client.AcquireOptions{})
	e.steps(t, l, 59, time.Second)
	require.False(t, isDone(l), "lost: %v", l.Err())
	assert.Equal(t, 3, e.ts.count("RenewLease"), "at 20s, 40s (to the cap) and 50s (no gain: no more)")
	e.step(t, l, time.Second)
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the expiry was not reported")
	}
	assert.ErrorIs(t, l.Err(), client.ErrLeaseExpired)
	// Told by the lease's own deadline, or by the key's RELEASED event if that came
	// first: the server's expirer and the lease's timer end it at the same instant.
	assert.Regexp(t, "max lease TTL|RELEASED", l.Err().Error())
}

// TestLeaseAfterWait: an acquire that waited 15s for a key gives a lease that
// started when the key came free, not when the request left: the helper learns when
// with a renewal at once, and then renews on the lease's own schedule.
func TestLeaseAfterWait(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second}, 1)
	other, err := e.ts.store.Acquire(context.Background(), keystore.AcquireOptions{TTL: keystore.TTL(time.Hour)})
	require.NoError(t, err)

	leased := make(chan *client.Lease, 1)
	go func() {
		l, err := e.c.Lease(context.Background(), client.AcquireOptions{TTL: 30 * time.Second, Wait: 25 * time.Second})
		assert.NoError(t, err)
		leased <- l
	}()
	waitFor(t, "the acquire waits", func() bool { return e.ts.obs.waiters.Load() == 1 })
	e.local.Advance(15 * time.Second)
	e.server.Advance(15 * time.Second)
	_, err = e.ts.store.Unblock(context.Background(), other.ID, other.Lease.Token)
	require.NoError(t, err)
	l := <-leased
	require.NotNil(t, l)
	defer l.Release(context.Background())
	e.settle(t, l)
	assert.Equal(t, 1, e.ts.count("RenewLease"), "a renewal at once")

	e.steps(t, l, 19, time.Second) // to 34s: the lease started at 15s
	assert.Equal(t, 1, e.ts.count("RenewLease"), "no renewal before a third is left")
	e.steps(t, l, 1, time.Second)
	assert.Equal(t, 2, e.ts.count("RenewLease"))
	e.steps(t, l, 80, time.Second)
	require.False(t, isDone(l), "lost: %v", l.Err())
	assert.Equal(t, 6, e.ts.count("RenewLease"), "one renewal per 20s")
}

// TestLeaseContextCancelled: cancelling the lease's context ends it and unblocks
// the key, and nothing of the helper outlives Release.
func TestLeaseContextCancelled(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := e.c.Lease(ctx, client.AcquireOptions{})
	require.NoError(t, err)
	e.settle(t, l)
	e.ts.waitSubscribers(t, 1) // the lease follows its key: its stream's goroutines are running
	ignore := goleak.IgnoreCurrent()

	cancel()
	<-l.Done()
	assert.ErrorIs(t, l.Err(), context.Canceled)
	assert.NoError(t, l.Release(context.Background()), "the key was freed")
	key, err := e.ts.store.Get(context.Background(), l.KeyID())
	require.NoError(t, err)
	assert.Equal(t, keystore.Available, key.Status)
	e.ts.waitSubscribers(t, 0)
	goleak.VerifyNone(t, ignore)
}

// TestLeaseReleaseLeavesNothingBehind: once Release returns, the helper's
// goroutine is gone.
func TestLeaseReleaseLeavesNothingBehind(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{}, 1)
	ignore := goleak.IgnoreCurrent()
	l, err := e.c.Lease(context.Background(), client.AcquireOptions{})
	require.NoError(t, err)
	e.settle(t, l)
	require.NoError(t, l.Release(context.Background()))
	assert.True(t, isDone(l))
	e.c.Close()
	e.ts.srv.CloseClientConnections()
	e.ts.waitSubscribers(t, 0) // the server's side of the lease's stream has ended too
	goleak.VerifyNone(t, ignore)
}

func TestLeaseNoKey(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{}, 1)
	e.lease(t, client.AcquireOptions{})
	_, err := e.c.Lease(context.Background(), client.AcquireOptions{})
	assert.True(t, errors.Is(err, client.ErrNotFound), "no key is free: %v", err)
}
