// Package storetest is the conformance suite that every keystore.Store must pass.
//
// It drives a store only through the keystore.Store interface, on a fake clock that
// starts at a fixed instant: the 60 s lease and the 5 min keep-alive rules are checked
// by moving that clock, to the nanosecond on each side of every deadline, never by
// sleeping. Only the delivery of events and the hand-off to waiting Acquires, which
// happen on the store's own goroutines, are awaited in real time, with generous limits.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// Start is the instant at which every suite clock starts. A fixed instant makes
// failures reproducible and deadlines easy to read in messages.
var Start = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// Opener builds a fresh, empty store on clock with opts, and registers its Close with
// t.Cleanup. It must pass opts through unchanged: the suite sets Observer to watch
// waiting Acquires.
type Opener = func(t *testing.T, clock *clockwork.FakeClock, opts keystore.Options) keystore.Store

// Real-time limits for what the store does on its own goroutines. They are generous
// because a loaded CI machine (and the race detector) can stall a goroutine for a
// long while; a correct store needs microseconds.
const (
	waitFor = 10 * time.Second
	tick    = time.Millisecond
)

// Run runs the whole suite against the stores open makes. Groups named in pending are
// skipped, saying so: the parts of the contract a store does not keep yet. An entry
// "Group: reason" skips the group with that reason.
func Run(t *testing.T, open Opener, pending ...string) {
	t.Run("Generate", func(t *testing.T) { testGenerate(t, open) })
	t.Run("IDs", func(t *testing.T) { testIDs(t, open) })
	t.Run("Acquire", func(t *testing.T) { testAcquire(t, open) })
	t.Run("Unblock", func(t *testing.T) { testUnblock(t, open) })
	t.Run("KeepAlive", func(t *testing.T) { testKeepAlive(t, open) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, open) })
	t.Run("LeaseDeadline", func(t *testing.T) { testLeaseDeadline(t, open) })
	t.Run("KeepAliveDeadline", func(t *testing.T) { testKeepAliveDeadline(t, open) })
	t.Run("DueTransitionsSeenByRequests", func(t *testing.T) { testDueTransitionsSeen(t, open) })
	t.Run("Renew", func(t *testing.T) { testRenew(t, open) })
	t.Run("History", func(t *testing.T) { testHistory(t, open) })
	t.Run("Stats", func(t *testing.T) { testStats(t, open) })
	t.Run("Wait", func(t *testing.T) { testWait(t, open) })
	t.Run("Events", func(t *testing.T) { testEvents(t, open) })
	for _, g := range []struct {
		name string
		test func(*testing.T, Opener)
	}{{"Pools", testPools}, {"Holders", testHolders}, {"List", testList}, {"Cooling", testCooling}, {"Import", testImport}} {
		name := g.name
		t.Run(name, func(t *testing.T) {
			for _, p := range pending {
				if p == name {
					t.Skipf("pending: this store does not keep the contract's %s yet", name)
				}
				if reason, ok := strings.CutPrefix(p, name+": "); ok {
					t.Skip(reason)
				}
			}
			g.test(t, open)
		})
	}
	t.Run("Ready", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		require.NoError(t, e.store.Ready(e.ctx))
	})
}

// env is one subtest's store, clock and context.
type env struct {
	t     *testing.T
	ctx   context.Context
	clock *clockwork.FakeClock
	store keystore.Store
	opts  keystore.Options // with defaults applied, as the store sees them
	obs   *waitObserver
}

func setup(t *testing.T, open Opener, opts keystore.Options) *env {
	t.Helper()
	obs := &waitObserver{}
	opts.Observer = obs
	clock := clockwork.NewFakeClockAt(Start)
	store := open(t, clock, opts)
	require.NotNil(t, store)
	return &env{t: t, ctx: t.Context(), clock: clock, store: store, opts: opts.WithDefaults(), obs: obs}
}

// waitObserver counts the Acquires waiting for a key, so that a test knows a waiter
// has queued before it frees a key.
type waitObserver struct {
	keystore.NopObserver
	waiting atomic.Int64
}

func (o *waitObserver) WaitersChanged(delta int) { o.waiting.Add(int64(delta)) }

func (e *env) generate(count int) []keystore.Key {
	e.t.Helper()
	keys, err := e.store.Generate(e.ctx, "", count)
	require.NoError(e.t, err)
	require.Len(e.t, keys, count)
	return keys
}

func (e *env) acquire(opts keystore.AcquireOptions) keystore.Key {
	e.t.Helper()
	k, err := e.store.Acquire(e.ctx, opts)
	require.NoError(e.t, err)
	requireLeased(e.t, k)
	return k
}

func (e *env) get(id string) keystore.Key {
	e.t.Helper()
	k, err := e.store.Get(e.ctx, id)
	require.NoError(e.t, err)
	return k
}

func (e *env) stats() keystore.Stats {
	e.t.Helper()
	s, err := e.store.Stats(e.ctx, "")
	require.NoError(e.t, err)
	return s
}

// eventuallyStats waits until the store, on its own, reaches the given counts.
func (e *env) eventuallyStats(total, available, blocked int) {
	e.t.Helper()
	want := keystore.Stats{Total: total, Available: available, Blocked: blocked}
	var got keystore.Stats
	require.Eventually(e.t, func() bool {
		got, _ = e.store.Stats(e.ctx, "")
		return got == want
	}, waitFor, tick, "stats never reached %+v", want)
}

// requireStats checks the counts of keys by state (Waiting aside).
func (e *env) requireStats(total, available, blocked int) {
	e.t.Helper()
	got := e.stats()
	got.Waiting = 0
	require.Equal(e.t, keystore.Stats{Total: total, Available: available, Blocked: blocked}, got)
}

// requireCode fails unless err carries code.
// advance moves the fake clock by d once the store's timers are armed: its expirer's
// (armed while any key exists) and one per waiting Acquire. A timer is armed from a
// reading of the clock, so moving the clock while one is being armed would leave it
// late by the move.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	timers := int(e.obs.waiting.Load())
	if st, err := e.store.Stats(e.ctx, ""); err == nil && st.Total > 0 {
		timers++
	}
	ctx, cancel := context.WithTimeout(e.ctx, waitFor)
	defer cancel()
	require.NoError(e.t, e.clock.BlockUntilContext(ctx, timers), "the store armed fewer than %d timers", timers)
	e.clock.Advance(d)
}

// optionalTTL is nil, the pool's default, for 0; else ttl.
func optionalTTL(ttl time.Duration) *time.Duration {
	if ttl == 0 {
		return nil
	}
	return &ttl
}

func requireCode(t *testing.T, err error, code keystore.Code) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, keystore.ErrorCode(err), "error: %v", err)
}

func requireTime(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	require.True(t, want.Equal(got), "%s: want %v, got %v", what, want, got)
}

// requireLeased checks the shape of a key that a lease holds.
func requireLeased(t *testing.T, k keystore.Key) {
	t.Helper()
	require.Equal(t, keystore.Blocked, k.Status)
	require.NotNil(t, k.Lease, "a BLOCKED key has a lease")
	require.Equal(t, k.ID, k.Lease.KeyID)
	require.NotEmpty(t, k.Lease.Token)
}

// requireAvailable checks the shape of an AVAILABLE key.
func requireAvailable(t *testing.T, k keystore.Key) {
	t.Helper()
	require.Equal(t, keystore.Available, k.Status)
	require.Nil(t, k.Lease, "an AVAILABLE key has no lease")
}

// requireSameKey compares two snapshots of a key field by field, times by instant.
func requireSameKey(t *testing.T, want, got keystore.Key) {
	t.Helper()
	require.Equal(t, want.ID, got.ID)
	require.Equal(t, want.Status, got.Status, "status of %s", want.ID)
	requireTime(t, want.CreatedAt, got.CreatedAt, "CreatedAt")
	requireTime(t, want.ExpiresAt, got.ExpiresAt, "ExpiresAt")
	require.Equal(t, want.History.TimesAcquired, got.History.TimesAcquired, "History.TimesAcquired")
	require.Equal(t, want.History.LeasesExpired, got.History.LeasesExpired, "History.LeasesExpired")
	requireTime(t, want.History.LastAcquiredAt, got.History.LastAcquiredAt, "History.LastAcquiredAt")
	require.Equal(t, want.History.Failures, got.History.Failures, "History.Failures")
	require.Equal(t, want.History.ConsecutiveFailures, got.History.ConsecutiveFailures, "History.ConsecutiveFailures")
	var until time.Time
	if want.CoolingUntil != nil {
		until = *want.CoolingUntil
	}
	requireCoolingUntil(t, until, got.CoolingUntil)
	require.Equal(t, want.Name, got.Name, "Name")
	if want.Lease == nil {
		require.Nil(t, got.Lease)
		return
	}
	require.NotNil(t, got.Lease)
	require.Equal(t, want.Lease.KeyID, got.Lease.KeyID)
	require.Equal(t, want.Lease.Token, got.Lease.Token)
	require.Equal(t, want.Lease.Fence, got.Lease.Fence)
	requireTime(t, want.Lease.AcquiredAt, got.Lease.AcquiredAt, "Lease.AcquiredAt")
	requireTime(t, want.Lease.ExpiresAt, got.Lease.ExpiresAt, "Lease.ExpiresAt")
}

// requireUnchanged checks that a failed call left the key as it was.
func (e *env) requireUnchanged(want keystore.Key) {
	e.t.Helper()
	requireSameKey(e.t, want, e.get(want.ID))
}

var urlSafe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func testGenerate(t *testing.T, open Opener) {
	t.Run("creates AVAILABLE keys kept alive for the TTL", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.advance(3 * time.Second)
		keys := e.generate(3)
		for _, k := range keys {
			requireAvailable(t, k)
			requireTime(t, Start.Add(3*time.Second), k.CreatedAt, "CreatedAt")
			requireTime(t, Start.Add(3*time.Second+keystore.DefaultKeepAliveTTL), k.ExpiresAt, "ExpiresAt")
			require.Equal(t, keystore.History{}, k.History)
			requireSameKey(t, k, e.get(k.ID))
		}
		e.requireStats(3, 3, 0)
	})
	t.Run("count outside 1..max is invalid and creates nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{MaxGenerate: 5})
		sub := e.subscribe(keystore.SubscribeOptions{})
		for _, count := range []int{0, -1, 6, -1 << 31, 1 << 40} {
			keys, err := e.store.Generate(e.ctx, "", count)
			requireCode(t, err, keystore.EINVALID)
			require.Empty(t, keys, "count %d", count)
		}
		e.requireStats(0, 0, 0)
		// The one event below must be the first: none came from the refused calls.
		e.generate(5)
		events := sub.waitFor(t, 5)
		require.Equal(t, keystore.EventGenerated, events[0].Type)
		e.requireStats(5, 5, 0)
	})
	t.Run("default max", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		_, err := e.store.Generate(e.ctx, "", keystore.DefaultMaxGenerate+1)
		requireCode(t, err, keystore.EINVALID)
		e.requireStats(0, 0, 0)
	})
}

func testIDs(t *testing.T, open Opener) {
	e := setup(t, open, keystore.Options{})
	seen := map[string]bool{}
	for range 5 {
		keys := e.generate(200)
		for _, k := range keys {
			require.GreaterOrEqual(t, len(k.ID), 20, "id %q", k.ID)
			require.Regexp(t, urlSafe, k.ID)
			require.False(t, seen[k.ID], "id %q issued twice", k.ID)
			seen[k.ID] = true
		}
		// Deleted and expired keys must not free their ids for reuse.
		for _, k := range keys[:100] {
			require.NoError(t, e.store.Delete(e.ctx, k.ID))
		}
		e.advance(e.opts.KeepAliveTTL)
	}
	// Waiting for the expirer keeps this test about ids; whether requests see due
	// transitions at once is DueTransitionsSeenByRequests's business.
	e.eventuallyStats(0, 0, 0)
	for range 50 {
		l := e.generate(1)[0]
		require.False(t, seen[l.ID])
		seen[l.ID] = true
		k := e.acquire(keystore.AcquireOptions{})
		require.Regexp(t, urlSafe, k.Lease.Token)
		require.False(t, seen[k.Lease.Token], "token %q equals an id or an earlier token", k.Lease.Token)
		seen[k.Lease.Token] = true
		require.NoError(t, e.store.Delete(e.ctx, k.ID))
	}
}

func testAcquire(t *testing.T, open Opener) {
	t.Run("empty pool", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		k, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{})
		requireCode(t, err, keystore.ENOTFOUND)
		require.Equal(t, keystore.Key{}, k)
	})
	t.Run("blocks a key under a new lease; keep-alive deadline untouched", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		before := e.generate(1)[0]
		e.advance(10 * time.Second)
		k := e.acquire(keystore.AcquireOptions{})
		require.Equal(t, before.ID, k.ID)
		requireTime(t, Start.Add(10*time.Second), k.Lease.AcquiredAt, "Lease.AcquiredAt")
		requireTime(t, Start.Add(10*time.Second+keystore.DefaultLeaseTTL), k.Lease.ExpiresAt, "Lease.ExpiresAt")
		requireTime(t, before.ExpiresAt, k.ExpiresAt, "ExpiresAt must not move on Acquire")
		requireTime(t, before.CreatedAt, k.CreatedAt, "CreatedAt")
		requireSameKey(t, k, e.get(k.ID))
		e.requireStats(1, 0, 1)
	})
	t.Run("only AVAILABLE keys; none left is NOT_FOUND and changes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		keys := e.generate(10)
		got := map[string]keystore.Key{}
		for range 10 {
			k := e.acquire(keystore.AcquireOptions{})
			require.NotContains(t, got, k.ID, "a BLOCKED key was acquired again")
			got[k.ID] = k
		}
		for _, k := range keys {
			require.Contains(t, got, k.ID)
		}
		_, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{})
		requireCode(t, err, keystore.ENOTFOUND)
		for _, k := range got {
			e.requireUnchanged(k)
		}
		e.requireStats(10, 0, 10)
	})
	t.Run("fences grow strictly and tokens differ", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		keys := e.generate(5)
		var last int64
		tokens := map[string]bool{}
		for i := range 60 {
			k := e.acquire(keystore.AcquireOptions{})
			require.Greater(t, k.Lease.Fence, last, "fence of lease %d", i)
			last = k.Lease.Fence
			require.False(t, tokens[k.Lease.Token], "token %q reused", k.Lease.Token)
			tokens[k.Lease.Token] = true
			// End leases in each of the three ways: fences must grow across all.
			switch i % 3 {
			case 0:
				_, err := e.store.Unblock(e.ctx, k.ID, k.Lease.Token)
				require.NoError(t, err)
			case 1:
				e.advance(e.opts.LeaseTTL)
			case 2:
				_, err := e.store.Unblock(e.ctx, k.ID, "")
				require.NoError(t, err)
			}
			if i%9 == 8 { // the loop runs for 20 minutes of fake time
				for _, k := range keys {
					_, err := e.store.KeepAlive(e.ctx, k.ID)
					require.NoError(t, err)
				}
			}
		}
	})
	t.Run("TTL per request", func(t *testing.T) {
		e := setup(t, open, keystore.Options{MaxLeaseTTL: 10 * time.Minute})
		keys := e.generate(3)
		for _, ttl := range []time.Duration{keystore.MinLeaseTTL, 10 * time.Minute, 90 * time.Second} {
			k := e.acquire(keystore.AcquireOptions{TTL: keystore.TTL(ttl)})
			requireTime(t, Start.Add(ttl), k.Lease.ExpiresAt, fmt.Sprintf("Lease.ExpiresAt for TTL %v", ttl))
		}
		e.requireStats(3, 0, 3)
		// Refused TTLs must be refused even when a key is free, and take nothing.
		_, err := e.store.Unblock(e.ctx, keys[0].ID, "")
		require.NoError(t, err)
		// An explicit zero is refused too: only an absent TTL means the default.
		for _, ttl := range []time.Duration{0, keystore.MinLeaseTTL - time.Nanosecond, 10*time.Minute + time.Nanosecond, -time.Second, time.Nanosecond} {
			_, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{TTL: keystore.TTL(ttl)})
			requireCode(t, err, keystore.EINVALID)
			e.requireStats(3, 1, 2)
			held := e.acquire(keystore.AcquireOptions{})
			_, err = e.store.Renew(e.ctx, held.ID, held.Lease.Token, keystore.TTL(ttl))
			requireCode(t, err, keystore.EINVALID)
			requireSameKey(t, held, e.get(held.ID))
			_, err = e.store.Unblock(e.ctx, held.ID, held.Lease.Token)
			require.NoError(t, err)
		}
		requireAvailable(t, e.get(keys[0].ID))
	})
}

func testUnblock(t *testing.T, open Opener) {
	for _, withToken := range []bool{false, true} {
		t.Run(fmt.Sprintf("BLOCKED to AVAILABLE, token=%v", withToken), func(t *testing.T) {
			e := setup(t, open, keystore.Options{})
			before := e.generate(1)[0]
			e.advance(time.Second)
			k := e.acquire(keystore.AcquireOptions{})
			e.advance(time.Second)
			token := ""
			if withToken {
				token = k.Lease.Token
			}
			got, err := e.store.Unblock(e.ctx, k.ID, token)
			require.NoError(t, err)
			requireAvailable(t, got)
			requireTime(t, before.ExpiresAt, got.ExpiresAt, "ExpiresAt must not move on Unblock")
			requireSameKey(t, got, e.get(k.ID))
			e.requireStats(1, 1, 0)
			// The lease is over: its token is refused from now on.
			_, err = e.store.Unblock(e.ctx, k.ID, k.Lease.Token)
			requireCode(t, err, keystore.ENOTBLOCKED)
		})
	}
	t.Run("wrong token is LEASE_MISMATCH and changes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(2)
		a := e.acquire(keystore.AcquireOptions{})
		b := e.acquire(keystore.AcquireOptions{})
		stale := a.Lease.Token
		_, err := e.store.Unblock(e.ctx, a.ID, a.Lease.Token)
		require.NoError(t, err)
		a = e.acquire(keystore.AcquireOptions{}) // the only free key: a again, new lease
		require.NotEqual(t, stale, a.Lease.Token)
		for name, token := range map[string]string{
			"another lease's token":     b.Lease.Token,
			"an earlier lease's token":  stale,
			"garbage":                   "not-a-token",
			"the key's id":              a.ID,
			"a well-formed random text": randomID(),
		} {
			_, err := e.store.Unblock(e.ctx, a.ID, token)
			require.Equal(t, keystore.ELEASEMISMATCH, keystore.ErrorCode(err), "token: %s; error: %v", name, err)
			e.requireUnchanged(a)
			e.requireUnchanged(b)
			e.requireStats(2, 0, 2)
		}
	})
	t.Run("AVAILABLE key is NOT_BLOCKED and changes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		k := e.generate(1)[0]
		for _, token := range []string{"", "whatever", randomID()} {
			_, err := e.store.Unblock(e.ctx, k.ID, token)
			requireCode(t, err, keystore.ENOTBLOCKED)
			e.requireUnchanged(k)
			e.requireStats(1, 1, 0)
		}
	})
}

func testKeepAlive(t *testing.T, open Opener) {
	t.Run("moves only the keep-alive deadline", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(2)
		blocked := e.acquire(keystore.AcquireOptions{})
		e.advance(30 * time.Second)
		got, err := e.store.KeepAlive(e.ctx, blocked.ID)
		require.NoError(t, err)
		want := blocked
		want.ExpiresAt = Start.Add(30*time.Second + keystore.DefaultKeepAliveTTL)
		requireSameKey(t, want, got)
		requireSameKey(t, want, e.get(blocked.ID))
		e.requireStats(2, 1, 1)
	})
	t.Run("AVAILABLE key", func(t *testing.T) {
		e := setup(t, open, keystore.Options{KeepAliveTTL: time.Minute})
		k := e.generate(1)[0]
		e.advance(59 * time.Second)
		got, err := e.store.KeepAlive(e.ctx, k.ID)
		require.NoError(t, err)
		k.ExpiresAt = Start.Add(59*time.Second + time.Minute)
		requireSameKey(t, k, got)
		// Alive past the first deadline thanks to the keep-alive, gone at the second.
		e.advance(59 * time.Second)
		e.requireUnchanged(k)
		e.advance(time.Second)
		_, err = e.store.Get(e.ctx, k.ID)
		requireCode(t, err, keystore.ENOTFOUND)
	})
}

func testDelete(t *testing.T, open Opener) {
	e := setup(t, open, keystore.Options{})
	keys := e.generate(3)
	blocked := e.acquire(keystore.AcquireOptions{})
	var free string
	for _, k := range keys {
		if k.ID != blocked.ID {
			free = k.ID
			break
		}
	}
	for _, id := range []string{blocked.ID, free} {
		require.NoError(t, e.store.Delete(e.ctx, id))
		_, err := e.store.Get(e.ctx, id)
		requireCode(t, err, keystore.ENOTFOUND)
		requireCode(t, e.store.Delete(e.ctx, id), keystore.ENOTFOUND)
	}
	e.requireStats(1, 1, 0)
	_, err := e.store.Unblock(e.ctx, blocked.ID, blocked.Lease.Token)
	requireCode(t, err, keystore.ENOTFOUND)
	_, err = e.store.Renew(e.ctx, blocked.ID, blocked.Lease.Token, nil)
	requireCode(t, err, keystore.ENOTFOUND)
	// A deleted key is never handed out again.
	k := e.acquire(keystore.AcquireOptions{})
	require.NotEqual(t, blocked.ID, k.ID)
	require.NotEqual(t, free, k.ID)
}

// randomID returns a string shaped like an id (22 characters of base64url) that no
// store issued.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func testNotFound(t *testing.T, open Opener) {
	e := setup(t, open, keystore.Options{})
	expired := e.generate(1)[0]
	e.advance(e.opts.KeepAliveTTL)
	deleted := e.generate(1)[0]
	require.NoError(t, e.store.Delete(e.ctx, deleted.ID))
	live := e.generate(1)[0]
	lease := e.acquire(keystore.AcquireOptions{})
	ids := map[string]string{
		"empty":               "",
		"garbage":             "no such key!",
		"unknown well-formed": randomID(),
		"long":                strings.Repeat("k", 64<<10),
		"deleted":             deleted.ID,
		"expired":             expired.ID,
		"a lease token":       lease.Lease.Token,
		"id with a suffix":    live.ID + "x",
		"id truncated":        live.ID[:len(live.ID)-1],
	}
	for name, id := range ids {
		t.Run(name, func(t *testing.T) {
			_, err := e.store.Unblock(e.ctx, id, "")
			requireCode(t, err, keystore.ENOTFOUND)
			_, err = e.store.Unblock(e.ctx, id, lease.Lease.Token)
			requireCode(t, err, keystore.ENOTFOUND)
			_, err = e.store.Renew(e.ctx, id, lease.Lease.Token, nil)
			requireCode(t, err, keystore.ENOTFOUND)
			_, err = e.store.KeepAlive(e.ctx, id)
			requireCode(t, err, keystore.ENOTFOUND)
			requireCode(t, e.store.Delete(e.ctx, id), keystore.ENOTFOUND)
			k, err := e.store.Get(e.ctx, id)
			requireCode(t, err, keystore.ENOTFOUND)
			require.Equal(t, keystore.Key{}, k)
		})
	}
	e.requireUnchanged(lease)
	e.requireStats(1, 0, 1)
}

// offsets are the three instants checked around every deadline.
var offsets = []struct {
	name   string
	offset time.Duration
	passed bool // whether the deadline has passed at deadline+offset
}{
	{"1ns before", -time.Nanosecond, false},
	{"at", 0, true},
	{"1ns after", time.Nanosecond, true},
}

func testLeaseDeadline(t *testing.T, open Opener) {
	for _, ttl := range []time.Duration{0, 2 * time.Second} {
		for _, at := range offsets {
			// Each probe is the first request after the clock moves, so it must see
			// the transition itself, whether or not the expirer has run.
			for _, probe := range []string{"Get", "Stats", "Acquire", "Unblock", "Renew"} {
				name := fmt.Sprintf("ttl=%v/%s/%s", ttl, at.name, probe)
				t.Run(name, func(t *testing.T) {
					e := setup(t, open, keystore.Options{})
					e.generate(1)
					e.advance(7 * time.Second)
					k := e.acquire(keystore.AcquireOptions{TTL: optionalTTL(ttl)})
					length := ttl
					if ttl == 0 {
						length = keystore.DefaultLeaseTTL
					}
					deadline := Start.Add(7*time.Second + length)
					requireTime(t, deadline, k.Lease.ExpiresAt, "Lease.ExpiresAt")
					e.advance(length + at.offset)

					switch probe {
					case "Get":
						got := e.get(k.ID)
						if at.passed {
							requireAvailable(t, got)
						} else {
							requireSameKey(t, k, got)
						}
					case "Stats":
						if at.passed {
							e.requireStats(1, 1, 0)
						} else {
							e.requireStats(1, 0, 1)
						}
					case "Acquire":
						again, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{})
						if at.passed {
							require.NoError(t, err)
							require.Equal(t, k.ID, again.ID)
							require.Greater(t, again.Lease.Fence, k.Lease.Fence)
							requireTime(t, deadline.Add(at.offset), again.Lease.AcquiredAt, "new Lease.AcquiredAt")
						} else {
							requireCode(t, err, keystore.ENOTFOUND)
						}
					case "Unblock":
						_, err := e.store.Unblock(e.ctx, k.ID, k.Lease.Token)
						if at.passed {
							requireCode(t, err, keystore.ENOTBLOCKED)
						} else {
							require.NoError(t, err)
						}
					case "Renew":
						_, err := e.store.Renew(e.ctx, k.ID, k.Lease.Token, nil)
						if at.passed {
							requireCode(t, err, keystore.ENOTBLOCKED)
						} else {
							require.NoError(t, err)
						}
					}
					got := e.get(k.ID)
					if at.passed {
						require.EqualValues(t, 1, got.History.LeasesExpired, "a lease that ran out is counted")
					} else {
						require.EqualValues(t, 0, got.History.LeasesExpired)
					}
				})
			}
		}
	}
}

func testKeepAliveDeadline(t *testing.T, open Opener) {
	for _, blocked := range []bool{false, true} {
		for _, at := range offsets {
			for _, probe := range []string{"Get", "Stats", "KeepAlive", "Delete", "Acquire", "Unblock"} {
				if probe == "Acquire" && blocked {
					continue // a BLOCKED key cannot be acquired either way
				}
				name := fmt.Sprintf("blocked=%v/%s/%s", blocked, at.name, probe)
				t.Run(name, func(t *testing.T) {
					e := setup(t, open, keystore.Options{})
					k := e.generate(1)[0]
					e.advance(10 * time.Second)
					// The deadline comes from the last KeepAlive, not from Generate.
					k, err := e.store.KeepAlive(e.ctx, k.ID)
					require.NoError(t, err)
					deadline := Start.Add(10*time.Second + keystore.DefaultKeepAliveTTL)
					requireTime(t, deadline, k.ExpiresAt, "ExpiresAt")
					if blocked {
						// A lease that outlives the key does not keep it alive.
						k = e.acquire(keystore.AcquireOptions{TTL: keystore.TTL(10 * time.Minute)})
					}
					e.advance(keystore.DefaultKeepAliveTTL + at.offset)

					var probeErr error
					switch probe {
					case "Get":
						_, probeErr = e.store.Get(e.ctx, k.ID)
					case "Stats":
						if at.passed {
							e.requireStats(0, 0, 0)
						} else if blocked {
							e.requireStats(1, 0, 1)
						} else {
							e.requireStats(1, 1, 0)
						}
					case "KeepAlive":
						var got keystore.Key
						got, probeErr = e.store.KeepAlive(e.ctx, k.ID)
						if probeErr == nil {
							requireTime(t, deadline.Add(at.offset+keystore.DefaultKeepAliveTTL), got.ExpiresAt, "ExpiresAt")
						}
					case "Delete":
						probeErr = e.store.Delete(e.ctx, k.ID)
					case "Acquire":
						_, probeErr = e.store.Acquire(e.ctx, keystore.AcquireOptions{})
					case "Unblock":
						_, probeErr = e.store.Unblock(e.ctx, k.ID, "")
						if !blocked && !at.passed {
							requireCode(t, probeErr, keystore.ENOTBLOCKED)
							probeErr = nil
						}
					}
					if at.passed {
						if probe != "Stats" {
							requireCode(t, probeErr, keystore.ENOTFOUND)
						}
						_, err := e.store.Get(e.ctx, k.ID)
						requireCode(t, err, keystore.ENOTFOUND)
						e.requireStats(0, 0, 0)
					} else {
						require.NoError(t, probeErr)
					}
				})
			}
		}
	}
}

// testDueTransitionsSeen checks the rule "a request made after a deadline sees the
// transition as done, even if the background expirer has not run yet" when many
// deadlines are due at once: the expirer is then still busy while the request comes.
func testDueTransitionsSeen(t *testing.T, open Opener) {
	const storm = 5000
	// prepare leaves one key K BLOCKED until Start+5m30s and alive until Start+6m,
	// behind storm keys that expire at Start+5m, and moves the clock onto K's lease
	// deadline: every one of those deadlines has passed and K is the only key left.
	prepare := func(t *testing.T) (*env, keystore.Key) {
		e := setup(t, open, keystore.Options{})
		k := e.generate(1)[0]
		e.acquire(keystore.AcquireOptions{TTL: keystore.TTL(5*time.Minute + 30*time.Second)})
		for range storm / 1000 {
			e.generate(1000)
		}
		e.advance(time.Minute)
		_, err := e.store.KeepAlive(e.ctx, k.ID)
		require.NoError(t, err)
		e.advance(4*time.Minute + 30*time.Second)
		return e, k
	}
	t.Run("Acquire", func(t *testing.T) {
		e, k := prepare(t)
		got, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{})
		require.NoError(t, err, "the lease of %s has run out, so it is free", k.ID)
		require.Equal(t, k.ID, got.ID)
	})
	t.Run("Stats", func(t *testing.T) {
		e, _ := prepare(t)
		e.requireStats(1, 1, 0)
	})
}

func testRenew(t *testing.T, open Opener) {
	t.Run("extends from now; the rest of the lease is untouched", func(t *testing.T) {
		for _, ttl := range []time.Duration{0, 2 * time.Minute, keystore.MinLeaseTTL} {
			t.Run(fmt.Sprintf("ttl=%v", ttl), func(t *testing.T) {
				e := setup(t, open, keystore.Options{})
				e.generate(1)
				k := e.acquire(keystore.AcquireOptions{})
				e.advance(59 * time.Second)
				got, err := e.store.Renew(e.ctx, k.ID, k.Lease.Token, optionalTTL(ttl))
				require.NoError(t, err)
				length := ttl
				if ttl == 0 {
					length = keystore.DefaultLeaseTTL
				}
				want := k
				lease := *k.Lease
				lease.ExpiresAt = Start.Add(59*time.Second + length)
				want.Lease = &lease
				requireSameKey(t, want, got)
				requireSameKey(t, want, e.get(k.ID))
				// The new deadline holds to the nanosecond.
				e.advance(length - time.Nanosecond)
				requireSameKey(t, want, e.get(k.ID))
				e.advance(time.Nanosecond)
				requireAvailable(t, e.get(k.ID))
			})
		}
	})
	t.Run("capped at AcquiredAt plus MaxLeaseTTL", func(t *testing.T) {
		e := setup(t, open, keystore.Options{MaxLeaseTTL: 10 * time.Minute, KeepAliveTTL: time.Hour})
		e.generate(1)
		k := e.acquire(keystore.AcquireOptions{})
		for range 11 {
			e.advance(50 * time.Second)
			got, err := e.store.Renew(e.ctx, k.ID, k.Lease.Token, keystore.TTL(10*time.Minute))
			require.NoError(t, err)
			requireTime(t, Start.Add(10*time.Minute), got.Lease.ExpiresAt, "Lease.ExpiresAt")
			requireTime(t, Start, got.Lease.AcquiredAt, "Lease.AcquiredAt")
		}
		e.advance(10*time.Minute - 11*50*time.Second - time.Nanosecond)
		require.Equal(t, keystore.Blocked, e.get(k.ID).Status)
		e.advance(time.Nanosecond)
		requireAvailable(t, e.get(k.ID))
	})
	t.Run("wrong token is LEASE_MISMATCH and changes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(2)
		a := e.acquire(keystore.AcquireOptions{})
		b := e.acquire(keystore.AcquireOptions{})
		for _, token := range []string{b.Lease.Token, "garbage", randomID(), a.ID} {
			_, err := e.store.Renew(e.ctx, a.ID, token, nil)
			requireCode(t, err, keystore.ELEASEMISMATCH)
			e.requireUnchanged(a)
			e.requireUnchanged(b)
		}
	})
	t.Run("TTL outside the limits is invalid and changes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{MaxLeaseTTL: 10 * time.Minute})
		e.generate(1)
		k := e.acquire(keystore.AcquireOptions{})
		for _, ttl := range []time.Duration{time.Nanosecond, keystore.MinLeaseTTL - time.Nanosecond, 10*time.Minute + time.Nanosecond, -time.Minute} {
			_, err := e.store.Renew(e.ctx, k.ID, k.Lease.Token, keystore.TTL(ttl))
			requireCode(t, err, keystore.EINVALID)
			e.requireUnchanged(k)
		}
	})
	t.Run("AVAILABLE key is NOT_BLOCKED", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		k := e.generate(1)[0]
		_, err := e.store.Renew(e.ctx, k.ID, randomID(), nil)
		requireCode(t, err, keystore.ENOTBLOCKED)
		e.requireUnchanged(k)
	})
	t.Run("a lease that ran out is never renewed", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(1)
		k := e.acquire(keystore.AcquireOptions{})
		e.advance(keystore.DefaultLeaseTTL)
		_, err := e.store.Renew(e.ctx, k.ID, k.Lease.Token, nil)
		requireCode(t, err, keystore.ENOTBLOCKED)
		requireAvailable(t, e.get(k.ID))
		// Once another lease holds the key, the old token names a lease that is gone.
		next := e.acquire(keystore.AcquireOptions{})
		require.Equal(t, k.ID, next.ID)
		_, err = e.store.Renew(e.ctx, k.ID, k.Lease.Token, nil)
		requireCode(t, err, keystore.ELEASEMISMATCH)
		e.requireUnchanged(next)
	})
}

func testHistory(t *testing.T, open Opener) {
	e := setup(t, open, keystore.Options{})
	k := e.generate(1)[0]
	require.Equal(t, keystore.History{}, k.History)
	e.acquire(keystore.AcquireOptions{})
	e.advance(time.Second)
	_, err := e.store.Unblock(e.ctx, k.ID, "")
	require.NoError(t, err)
	e.advance(time.Second)
	e.acquire(keystore.AcquireOptions{}) // runs out below
	e.advance(keystore.DefaultLeaseTTL)
	got := e.get(k.ID)
	require.EqualValues(t, 2, got.History.TimesAcquired)
	require.EqualValues(t, 1, got.History.LeasesExpired)
	requireTime(t, Start.Add(2*time.Second), got.History.LastAcquiredAt, "History.LastAcquiredAt")
	// A renewed lease that is then unblocked did not run out.
	third := e.acquire(keystore.AcquireOptions{})
	_, err = e.store.Renew(e.ctx, k.ID, third.Lease.Token, nil)
	require.NoError(t, err)
	_, err = e.store.Unblock(e.ctx, k.ID, third.Lease.Token)
	require.NoError(t, err)
	got = e.get(k.ID)
	require.EqualValues(t, 3, got.History.TimesAcquired)
	require.EqualValues(t, 1, got.History.LeasesExpired)
	requireTime(t, Start.Add(2*time.Second+keystore.DefaultLeaseTTL), got.History.LastAcquiredAt, "History.LastAcquiredAt")
}

func testStats(t *testing.T, open Opener) {
	e := setup(t, open, keystore.Options{})
	e.requireStats(0, 0, 0)
	e.generate(5)
	a := e.acquire(keystore.AcquireOptions{})
	b := e.acquire(keystore.AcquireOptions{TTL: keystore.TTL(2 * time.Minute)})
	e.requireStats(5, 3, 2)
	require.NoError(t, e.store.Delete(e.ctx, a.ID))
	e.requireStats(4, 3, 1)
	e.advance(2 * time.Minute)
	e.requireStats(4, 4, 0)
	requireAvailable(t, e.get(b.ID))
	e.advance(keystore.DefaultKeepAliveTTL)
	e.requireStats(0, 0, 0)
}

// acquireResult is the outcome of an Acquire run in a goroutine.
type acquireResult struct {
	key keystore.Key
	err error
}

// startWaiter starts an Acquire with opts in a goroutine and returns once the store
// has queued it (the observer saw the waiting count reach queued).
func (e *env) startWaiter(ctx context.Context, opts keystore.AcquireOptions, queued int64) <-chan acquireResult {
	e.t.Helper()
	done := make(chan acquireResult, 1)
	go func() {
		k, err := e.store.Acquire(ctx, opts)
		done <- acquireResult{k, err}
	}()
	require.Eventually(e.t, func() bool { return e.obs.waiting.Load() >= queued }, waitFor, tick,
		"the Acquire never started waiting")
	return done
}

// result waits for a waiter's outcome.
func (e *env) result(done <-chan acquireResult) acquireResult {
	e.t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(waitFor):
		e.t.Fatal("the waiting Acquire never returned")
		return acquireResult{}
	}
}

// requireRefused checks that, while waiting Acquires wait, one more that would wait is
// refused at once (on a clock that does not move) with TOO_MANY_WAITERS, and changes
// nothing.
func (e *env) requireRefused(waiting int64) {
	e.t.Helper()
	before := e.stats()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	done := make(chan acquireResult, 1)
	go func() {
		k, err := e.store.Acquire(ctx, keystore.AcquireOptions{Wait: 10 * time.Second})
		done <- acquireResult{k, err}
	}()
	select {
	case r := <-done:
		requireCode(e.t, r.err, keystore.ETOOMANYWAITERS)
		require.Equal(e.t, keystore.Key{}, r.key)
	case <-time.After(waitFor):
		cancel()
		<-done
		e.t.Fatal("an acquire past the bound on waiters waited instead of being refused")
	}
	require.EqualValues(e.t, waiting, e.obs.waiting.Load())
	require.Equal(e.t, before, e.stats())
}

// requirePending checks that a waiter has not returned.
func requirePending(t *testing.T, done <-chan acquireResult) {
	t.Helper()
	select {
	case r := <-done:
		t.Fatalf("the Acquire should still be waiting, returned %+v, %v", r.key, r.err)
	default:
	}
}

func testWait(t *testing.T, open Opener) {
	t.Run("a waiter outlives a freed key that was already dead", func(t *testing.T) {
		// After a stall, the expirer wakes to a lease that ran out on a key whose
		// keep-alive ran out too: the freed key is dead, and the waiter must stay in
		// line for the next one, not be dropped unanswered.
		e := setup(t, open, keystore.Options{})
		events := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventReleased, keystore.EventExpired}})
		e.generate(1) // kept alive until Start+5m
		e.advance(3*time.Minute + 50*time.Second)
		e.acquire(keystore.AcquireOptions{}) // leased until Start+4m50s
		e.advance(59 * time.Second)
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: keystore.MaxWait}, 1)
		e.advance(11*time.Second + time.Nanosecond) // past both deadlines, not the wait
		got := events.waitFor(t, 2)
		require.Equal(t, keystore.EventReleased, got[0].Type)
		require.Equal(t, keystore.EventExpired, got[1].Type)
		requirePending(t, done)
		fresh := e.generate(1)[0]
		r := e.result(done)
		require.NoError(t, r.err, "the waiter was dropped with the dead key")
		require.Equal(t, fresh.ID, r.key.ID)
		requireLeased(t, r.key)
	})
	t.Run("Wait over MaxWait is invalid", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		for _, free := range []bool{false, true} {
			if free {
				e.generate(1)
			}
			_, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{Wait: keystore.MaxWait + time.Nanosecond})
			requireCode(t, err, keystore.EINVALID)
		}
		e.requireStats(1, 1, 0)
	})
	t.Run("a free key is returned at once", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		k := e.generate(1)[0]
		got := e.acquire(keystore.AcquireOptions{Wait: keystore.MaxWait})
		require.Equal(t, k.ID, got.ID)
		require.EqualValues(t, 0, e.obs.waiting.Load())
	})
	t.Run("served by Unblock", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(1)
		held := e.acquire(keystore.AcquireOptions{})
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 10 * time.Second, TTL: keystore.TTL(5 * time.Second)}, 1)
		e.advance(3 * time.Second)
		unblocked, err := e.store.Unblock(e.ctx, held.ID, held.Lease.Token)
		require.NoError(t, err)
		r := e.result(done)
		require.NoError(t, r.err)
		requireLeased(t, r.key)
		require.Equal(t, held.ID, r.key.ID)
		require.Greater(t, r.key.Lease.Fence, held.Lease.Fence)
		requireTime(t, Start.Add(3*time.Second), r.key.Lease.AcquiredAt, "Lease.AcquiredAt")
		requireTime(t, Start.Add(8*time.Second), r.key.Lease.ExpiresAt, "Lease.ExpiresAt uses the waiter's TTL")
		// The unblocker must not learn the waiter's token: with it, it could end or
		// renew a lease that is not its own.
		if unblocked.Lease != nil {
			require.NotEqual(t, r.key.Lease.Token, unblocked.Lease.Token, "Unblock returned the next holder's token")
		}
		requireSameKey(t, r.key, e.get(held.ID))
		e.requireStats(1, 0, 1)
		require.EqualValues(t, 0, e.obs.waiting.Load())
	})
	t.Run("served by Generate", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 10 * time.Second}, 1)
		keys := e.generate(1)
		r := e.result(done)
		require.NoError(t, r.err)
		requireLeased(t, r.key)
		require.Equal(t, keys[0].ID, r.key.ID)
		if keys[0].Lease != nil {
			require.NotEqual(t, r.key.Lease.Token, keys[0].Lease.Token, "Generate returned the waiter's token")
		}
		e.requireStats(1, 0, 1)
	})
	t.Run("served when a lease runs out, with no request", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(1)
		held := e.acquire(keystore.AcquireOptions{})
		e.advance(40 * time.Second)
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 30 * time.Second}, 1)
		e.advance(20*time.Second - time.Nanosecond)
		requirePending(t, done)
		e.advance(time.Nanosecond)
		r := e.result(done)
		require.NoError(t, r.err)
		require.Equal(t, held.ID, r.key.ID)
		require.Greater(t, r.key.Lease.Fence, held.Lease.Fence)
		got := e.get(held.ID)
		require.EqualValues(t, 1, got.History.LeasesExpired)
		require.EqualValues(t, 2, got.History.TimesAcquired)
	})
	t.Run("first come, first served", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(3)
		held := []keystore.Key{e.acquire(keystore.AcquireOptions{}), e.acquire(keystore.AcquireOptions{}), e.acquire(keystore.AcquireOptions{})}
		var waiters []<-chan acquireResult
		for i := range 3 {
			waiters = append(waiters, e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, int64(i+1)))
		}
		for i, h := range held {
			_, err := e.store.Unblock(e.ctx, h.ID, "")
			require.NoError(t, err)
			r := e.result(waiters[i])
			require.NoError(t, r.err, "waiter %d", i)
			require.Equal(t, h.ID, r.key.ID, "waiter %d gets the key freed while it is first in line", i)
			for _, later := range waiters[i+1:] {
				requirePending(t, later)
			}
		}
	})
	t.Run("many waiters, keys freed at once: arrival order, once each, never the cancelled", func(t *testing.T) {
		const waiters, freed = 24, 8
		e := setup(t, open, keystore.Options{})
		e.generate(freed)
		var held []keystore.Key
		for range freed {
			held = append(held, e.acquire(keystore.AcquireOptions{}))
		}
		cancels := map[int]context.CancelFunc{}
		var results []<-chan acquireResult
		for i := range waiters {
			ctx := e.ctx
			if i%3 == 0 { // every third client leaves before any key comes free
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(e.ctx)
				cancels[i] = cancel
			}
			results = append(results, e.startWaiter(ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, int64(i+1)))
		}
		for i, cancel := range cancels {
			cancel()
			r := e.result(results[i])
			require.Error(t, r.err, "cancelled waiter %d", i)
			require.Equal(t, keystore.Key{}, r.key, "cancelled waiter %d", i)
		}
		require.Eventually(t, func() bool { return e.obs.waiting.Load() == int64(waiters-len(cancels)) }, waitFor, tick)

		var wg sync.WaitGroup
		for _, h := range held {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := e.store.Unblock(e.ctx, h.ID, h.Lease.Token)
				assert.NoError(t, err)
			}()
		}
		wg.Wait()

		served := map[string]int{}
		var unserved []int
		for i := range waiters {
			if cancels[i] != nil {
				continue
			}
			if len(served) < freed {
				r := e.result(results[i])
				require.NoError(t, r.err, "waiter %d is among the first %d in line", i, freed)
				requireLeased(t, r.key)
				prev, twice := served[r.key.ID]
				require.False(t, twice, "key %s served to waiters %d and %d", r.key.ID, prev, i)
				served[r.key.ID] = i
				continue
			}
			requirePending(t, results[i])
			unserved = append(unserved, i)
		}
		e.requireStats(freed, 0, freed)
		require.EqualValues(t, len(unserved), e.obs.waiting.Load())
		require.Equal(t, len(unserved), e.stats().Waiting, "Stats.Waiting counts the acquires waiting now")

		e.advance(20 * time.Second)
		for _, i := range unserved {
			requireCode(t, e.result(results[i]).err, keystore.ENOTFOUND)
		}
		e.requireStats(freed, 0, freed)
	})
	t.Run("the wait runs out: NOT_FOUND", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 5 * time.Second}, 1)
		// The waiter's timer is armed before it queues: one move of the clock ends it.
		e.advance(5*time.Second - time.Nanosecond)
		requirePending(t, done)
		e.advance(time.Nanosecond)
		r := e.result(done)
		requireCode(t, r.err, keystore.ENOTFOUND)
		require.Equal(t, keystore.Key{}, r.key)
		require.EqualValues(t, 0, e.obs.waiting.Load())
		// A key freed later is not taken by the waiter that left.
		e.generate(1)
		e.requireStats(1, 1, 0)
	})
	t.Run("at most MaxWaiters wait: one more is refused at once and changes nothing", func(t *testing.T) {
		const bound = 3
		e := setup(t, open, keystore.Options{MaxWaiters: bound})
		e.generate(1)
		held := e.acquire(keystore.AcquireOptions{})
		ctx, leave := context.WithCancel(e.ctx)
		waiters := []<-chan acquireResult{e.startWaiter(ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, 1)}
		for i := 1; i < bound; i++ {
			waiters = append(waiters, e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, int64(i+1)))
		}
		e.requireRefused(bound)
		e.requireUnchanged(held)

		// An acquire that does not wait is none of the bound's business.
		_, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{})
		requireCode(t, err, keystore.ENOTFOUND)

		// A waiter that leaves gives its place back.
		leave()
		require.Error(t, e.result(waiters[0]).err)
		waiters[0] = e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, bound)
		e.requireRefused(bound)

		// So does one that is served: the freed key goes to the first in line.
		_, err = e.store.Unblock(e.ctx, held.ID, held.Lease.Token)
		require.NoError(t, err)
		r := e.result(waiters[1])
		require.NoError(t, r.err)
		require.Equal(t, held.ID, r.key.ID)
		waiters[1] = e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, bound)
		e.requireRefused(bound)

		// And those whose wait runs out; then the bound admits as many again.
		e.advance(20 * time.Second)
		for _, w := range waiters {
			requireCode(t, e.result(w).err, keystore.ENOTFOUND)
		}
		for i := range bound {
			waiters[i] = e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 10 * time.Second}, int64(i+1))
		}
		e.requireRefused(bound)
		// A key that comes free goes to the waiters, not past them.
		fresh := e.generate(bound + 1)
		for _, w := range waiters {
			require.NoError(t, e.result(w).err)
		}
		// With one left free and no one waiting, an acquire that may wait takes it.
		got := e.acquire(keystore.AcquireOptions{Wait: 10 * time.Second})
		require.True(t, slices.ContainsFunc(fresh, func(k keystore.Key) bool { return k.ID == got.ID }))
		e.requireStats(bound+2, 0, bound+2)
	})
	t.Run("a cancelled waiter never gets a key", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		ctx, cancel := context.WithCancel(e.ctx)
		done := e.startWaiter(ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, 1)
		cancel()
		r := e.result(done)
		require.Error(t, r.err)
		require.Equal(t, keystore.Key{}, r.key)
		k := e.generate(1)[0]
		e.requireStats(1, 1, 0)
		got := e.acquire(keystore.AcquireOptions{})
		require.Equal(t, k.ID, got.ID)
	})
	t.Run("a cancelled waiter is skipped for the next in line", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		ctx, cancel := context.WithCancel(e.ctx)
		first := e.startWaiter(ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, 1)
		second := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, 2)
		cancel()
		k := e.generate(1)[0]
		r := e.result(second)
		require.NoError(t, r.err)
		require.Equal(t, k.ID, r.key.ID)
		r = e.result(first)
		require.Error(t, r.err)
		require.Equal(t, keystore.Key{}, r.key)
		e.requireStats(1, 0, 1)
	})
}

// collector reads a subscription into a slice on its own goroutine.
type collector struct {
	sub    *keystore.Subscription
	mu     sync.Mutex
	events []keystore.Event
	closed chan struct{}
}

func (e *env) subscribe(opts keystore.SubscribeOptions) *collector {
	e.t.Helper()
	return subscribe(e.t, e.ctx, e.store, opts)
}

func subscribe(t *testing.T, ctx context.Context, store keystore.Store, opts keystore.SubscribeOptions) *collector {
	t.Helper()
	sub, err := store.Subscribe(ctx, opts)
	require.NoError(t, err)
	c := &collector{sub: sub, closed: make(chan struct{})}
	go func() {
		defer close(c.closed)
		for {
			ev, err := sub.Next(ctx)
			if ev == nil || err != nil {
				return
			}
			c.mu.Lock()
			c.events = append(c.events, *ev)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) snapshot() []keystore.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// waitFor waits until at least n events have arrived and returns them all.
func (c *collector) waitFor(t *testing.T, n int) []keystore.Event {
	t.Helper()
	require.Eventually(t, func() bool { return len(c.snapshot()) >= n }, waitFor, tick,
		"want %d events", n)
	return c.snapshot()
}

// requireConsecutive checks that seq grows by one from event to event.
func requireConsecutive(t *testing.T, events []keystore.Event) {
	t.Helper()
	for i := 1; i < len(events); i++ {
		require.Equal(t, events[i-1].Seq+1, events[i].Seq, "seq after event %d of %v", i-1, events)
	}
}

func testEvents(t *testing.T, open Opener) {
	t.Run("all six types, in order, each delivered without a request", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		sub := e.subscribe(keystore.SubscribeOptions{})
		keys := e.generate(2)
		sub.waitFor(t, 2)
		e.advance(time.Second)
		x := e.acquire(keystore.AcquireOptions{})
		e.advance(time.Second)
		_, err := e.store.Unblock(e.ctx, x.ID, x.Lease.Token)
		require.NoError(t, err)
		e.advance(time.Second)
		y := e.acquire(keystore.AcquireOptions{})
		sub.waitFor(t, 5)
		// The lease runs out with no request after the clock moves: the expirer alone
		// must deliver RELEASED.
		e.advance(keystore.DefaultLeaseTTL)
		sub.waitFor(t, 6)
		other := keys[0]
		if other.ID == y.ID {
			other = keys[1]
		}
		require.NoError(t, e.store.Delete(e.ctx, other.ID))
		sub.waitFor(t, 7)
		e.advance(keystore.DefaultKeepAliveTTL - keystore.DefaultLeaseTTL - 3*time.Second)
		events := sub.waitFor(t, 8)
		require.Len(t, events, 8)
		requireConsecutive(t, events)

		type want struct {
			typ keystore.EventType
			key string
			at  time.Time
		}
		keepAlive := Start.Add(keystore.DefaultKeepAliveTTL)
		wants := []want{
			{keystore.EventGenerated, keys[0].ID, Start},
			{keystore.EventGenerated, keys[1].ID, Start},
			{keystore.EventAcquired, x.ID, Start.Add(time.Second)},
			{keystore.EventUnblocked, x.ID, Start.Add(2 * time.Second)},
			{keystore.EventAcquired, y.ID, Start.Add(3 * time.Second)},
			{keystore.EventReleased, y.ID, Start.Add(3*time.Second + keystore.DefaultLeaseTTL)},
			{keystore.EventDeleted, other.ID, Start.Add(3*time.Second + keystore.DefaultLeaseTTL)},
			{keystore.EventExpired, y.ID, keepAlive},
		}
		for i, w := range wants {
			require.Equal(t, w.typ, events[i].Type, "event %d", i)
			require.Equal(t, w.key, events[i].KeyID, "event %d", i)
			requireTime(t, w.at, events[i].At, fmt.Sprintf("At of event %d (%s)", i, w.typ))
		}
		_, err = e.store.Get(e.ctx, y.ID)
		requireCode(t, err, keystore.ENOTFOUND)
	})
	t.Run("At of RELEASED and EXPIRED is the deadline, however late they are seen", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		sub := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventReleased, keystore.EventExpired}})
		k := e.generate(1)[0]
		e.acquire(keystore.AcquireOptions{})
		e.advance(keystore.DefaultLeaseTTL + 17*time.Second)
		requireAvailable(t, e.get(k.ID)) // a request sees it before (or after) the expirer
		e.advance(keystore.DefaultKeepAliveTTL)
		_, err := e.store.Get(e.ctx, k.ID)
		requireCode(t, err, keystore.ENOTFOUND)
		events := sub.waitFor(t, 2)
		require.Never(t, func() bool { return len(sub.snapshot()) > 2 }, 50*time.Millisecond, tick, "each transition is published once")
		require.Equal(t, keystore.EventReleased, events[0].Type)
		requireTime(t, Start.Add(keystore.DefaultLeaseTTL), events[0].At, "RELEASED At")
		require.Equal(t, keystore.EventExpired, events[1].Type)
		requireTime(t, Start.Add(keystore.DefaultKeepAliveTTL), events[1].At, "EXPIRED At")
	})
	t.Run("Types filter", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		all := e.subscribe(keystore.SubscribeOptions{})
		some := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventReleased, keystore.EventDeleted}})
		e.generate(3)
		a := e.acquire(keystore.AcquireOptions{})
		_, err := e.store.Unblock(e.ctx, a.ID, "")
		require.NoError(t, err)
		e.acquire(keystore.AcquireOptions{})
		e.advance(keystore.DefaultLeaseTTL)
		require.NoError(t, e.store.Delete(e.ctx, a.ID))
		everything := all.waitFor(t, 8)
		filtered := some.waitFor(t, 2)
		require.Len(t, filtered, 2)
		// RELEASED (from the expirer) and DELETED happen at the same instant, in either order.
		require.ElementsMatch(t, []keystore.EventType{keystore.EventReleased, keystore.EventDeleted},
			[]keystore.EventType{filtered[0].Type, filtered[1].Type})
		// Filtered events keep their place in the pool's sequence.
		var kept []keystore.Event
		for _, ev := range everything {
			if ev.Type == keystore.EventReleased || ev.Type == keystore.EventDeleted {
				kept = append(kept, ev)
			}
		}
		require.Equal(t, kept, filtered)
		_, err = e.store.Subscribe(e.ctx, keystore.SubscribeOptions{Types: []keystore.EventType{"NOPE"}})
		requireCode(t, err, keystore.EINVALID)
	})
	t.Run("After replays retained events, then goes live", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		live := e.subscribe(keystore.SubscribeOptions{})
		e.generate(4)
		history := live.waitFor(t, 4)
		requireConsecutive(t, history)
		after := history[1].Seq
		replay := e.subscribe(keystore.SubscribeOptions{After: &after})
		zero := int64(0)
		fromStart := e.subscribe(keystore.SubscribeOptions{After: &zero})
		latest := history[3].Seq
		caughtUp := e.subscribe(keystore.SubscribeOptions{After: &latest})
		require.Equal(t, history[2:], replay.waitFor(t, 2))
		require.Equal(t, history, fromStart.waitFor(t, 4))
		e.acquire(keystore.AcquireOptions{})
		history = live.waitFor(t, 5)
		require.Equal(t, history[2:], replay.waitFor(t, 3))
		require.Equal(t, history, fromStart.waitFor(t, 5))
		require.Equal(t, history[4:], caughtUp.waitFor(t, 1))
		require.Len(t, caughtUp.snapshot(), 1)
	})
	t.Run("subscriptions end with their context and leave no goroutine", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.generate(1)
		runtime.GC()
		baseline := len(ownGoroutines())
		var subs []*keystore.Subscription
		var cancels []context.CancelFunc
		for range 50 {
			ctx, cancel := context.WithCancel(e.ctx)
			sub, err := e.store.Subscribe(ctx, keystore.SubscribeOptions{})
			require.NoError(t, err)
			subs = append(subs, sub)
			cancels = append(cancels, cancel)
		}
		e.acquire(keystore.AcquireOptions{})
		for _, cancel := range cancels {
			cancel()
		}
		for i, sub := range subs {
			select {
			case <-sub.Done():
			case <-time.After(waitFor):
				t.Fatalf("subscription %d not ended after its context ended", i)
			}
			require.NoError(t, sub.Err(), "a subscriber that leaves is no error")
		}
		// Looked at by hand: require.Eventually runs its condition on a goroutine of its own.
		for deadline := time.Now().Add(waitFor); len(ownGoroutines()) > baseline; time.Sleep(tick) {
			if time.Now().After(deadline) {
				own := ownGoroutines()
				t.Fatalf("goroutines: %d before subscribing, %d after every subscription ended:\n%s",
					baseline, len(own), strings.Join(own, "\n\n"))
			}
		}
	})
	t.Run("a slow consumer is cut, never slowing the pool", func(t *testing.T) {
		const retention = 16
		e := setup(t, open, keystore.Options{EventRetention: retention})
		slow, err := e.store.Subscribe(e.ctx, keystore.SubscribeOptions{})
		require.NoError(t, err)
		// Far more events than the store retains (and than any channel buffer), with
		// a subscriber that reads nothing. The mutations must not wait for it.
		const events = 3000
		finished := make(chan error, 1)
		go func() {
			for range events / 1000 {
				if _, err := e.store.Generate(e.ctx, "", 1000); err != nil {
					finished <- err
					return
				}
			}
			finished <- nil
		}()
		select {
		case err := <-finished:
			require.NoError(t, err)
		case <-time.After(waitFor):
			t.Fatal("Generate blocked behind a subscriber that does not read")
		}
		e.requireStats(events, events, 0)
		// Reading now finds it cut: a bounded prefix at most, then the end.
		var got []keystore.Event
		ctx, cancel := context.WithTimeout(e.ctx, waitFor)
		defer cancel()
		for {
			ev, err := slow.Next(ctx)
			require.NotErrorIs(t, err, context.DeadlineExceeded, "the slow subscriber was never cut (read %d events)", len(got))
			if ev == nil {
				break
			}
			got = append(got, *ev)
		}
		require.Less(t, len(got), events, "the slow subscriber was not cut")
		requireConsecutive(t, got)
		requireCode(t, slow.Err(), keystore.ESLOWCONSUMER)
		// The pool goes on serving after the cut.
		e.generate(1)
		e.requireStats(events+1, events+1, 0)
	})
}

// ownGoroutines returns the stacks of the goroutines that run this module's
// code. A client library's own connection goroutines (rueidis starts a pipe's
// reader and writer when it first pipelines) are not the store's to end, and
// they come and go with load; a subscription that leaked would show a frame of
// ours.
func ownGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var own []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/keypool/keypool/") {
			own = append(own, g)
		}
	}
	return own
}
