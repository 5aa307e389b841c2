package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// The keys held back: COOLING until a deadline, QUARANTINED until restored (CONTRACT
// "Cool-down and quarantine"), with the transitions and events of its table.

func cooldown(d time.Duration) keystore.UnblockOptions {
	return keystore.UnblockOptions{Cooldown: &d}
}

// unblockWith unblocks k's lease with opts and returns the key as the answer shows it.
func (e *env) unblockWith(k keystore.Key, opts keystore.UnblockOptions) keystore.Key {
	e.t.Helper()
	got, err := e.store.UnblockWith(e.ctx, k.ID, k.Lease.Token, opts)
	require.NoError(e.t, err)
	require.Equal(e.t, k.ID, got.ID)
	require.Nil(e.t, got.Lease, "a key that is no longer leased has no lease")
	return got
}

// requireHeld checks the shape of a COOLING (until is not zero) or QUARANTINED key.
func requireHeld(t *testing.T, k keystore.Key, status keystore.Status, until time.Time) {
	t.Helper()
	require.Equal(t, status, k.Status, "status of %s", k.ID)
	require.Nil(t, k.Lease, "a key held back has no lease")
	requireCoolingUntil(t, until, k.CoolingUntil)
}

// requireCoolingUntil checks a key's end of cool-down: nil when until is zero.
func requireCoolingUntil(t *testing.T, until time.Time, got *time.Time) {
	t.Helper()
	if until.IsZero() {
		require.Nil(t, got, "CoolingUntil of a key not COOLING")
		return
	}
	require.NotNil(t, got, "CoolingUntil of a COOLING key")
	requireTime(t, until, *got, "CoolingUntil")
}

// requireCounts checks the counts of keys by state (Waiting aside).
func (e *env) requireCounts(want keystore.Stats) {
	e.t.Helper()
	got := e.stats()
	got.Waiting = 0
	require.Equal(e.t, want, got)
}

// requireNoneFree checks that an Acquire finds no key.
func (e *env) requireNoneFree() {
	e.t.Helper()
	_, err := e.store.Acquire(e.ctx, keystore.AcquireOptions{})
	requireCode(e.t, err, keystore.ENOTFOUND)
}

// eventWant is an event a test expects: its type, key and instant.
type eventWant struct {
	typ keystore.EventType
	key string
	at  time.Time
}

// requireEvents waits for len(wants) events and checks them in order.
func requireEvents(t *testing.T, c *collector, wants ...eventWant) {
	t.Helper()
	events := c.waitFor(t, len(wants))
	require.Len(t, events, len(wants), "events: %v", events)
	requireConsecutive(t, events)
	for i, w := range wants {
		require.Equal(t, w.typ, events[i].Type, "event %d of %v", i, events)
		require.Equal(t, w.key, events[i].KeyID, "key of event %d (%s)", i, w.typ)
		requireTime(t, w.at, events[i].At, fmt.Sprintf("At of event %d (%s)", i, w.typ))
	}
}

func testCooling(t *testing.T, open Opener) {
	t.Run("unblock with a cool-down: COOLING until its end, to the nanosecond, then AVAILABLE", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		sub := e.subscribe(keystore.SubscribeOptions{})
		k := e.generate(1)[0]
		leased := e.acquire(keystore.AcquireOptions{})
		e.advance(time.Second)
		until := Start.Add(time.Second + 30*time.Second)
		got := e.unblockWith(leased, cooldown(30*time.Second))
		requireHeld(t, got, keystore.Cooling, until)
		requireHeld(t, e.get(k.ID), keystore.Cooling, until)
		e.requireCounts(keystore.Stats{Total: 1, Cooling: 1})
		e.requireNoneFree()

		e.advance(30*time.Second - time.Nanosecond)
		requireHeld(t, e.get(k.ID), keystore.Cooling, until)
		e.requireNoneFree()
		e.advance(time.Nanosecond)
		// A request made at the deadline sees the cool-down ended, expirer or not.
		requireAvailable(t, e.get(k.ID))
		e.requireCounts(keystore.Stats{Total: 1, Available: 1})
		again := e.acquire(keystore.AcquireOptions{})
		require.Equal(t, k.ID, again.ID)
		require.Zero(t, again.History.Failures, "a cool-down alone is no failure")

		requireEvents(t, sub,
			eventWant{keystore.EventGenerated, k.ID, Start},
			eventWant{keystore.EventAcquired, k.ID, Start},
			eventWant{keystore.EventUnblocked, k.ID, Start.Add(time.Second)},
			eventWant{keystore.EventCooled, k.ID, Start.Add(time.Second)},
			eventWant{keystore.EventRecovered, k.ID, until},
			eventWant{keystore.EventAcquired, k.ID, until},
		)
	})

	t.Run("a cool-down ends without a request: RECOVERED from the expirer", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		sub := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventRecovered}})
		k := e.generate(1)[0]
		e.unblockWith(e.acquire(keystore.AcquireOptions{}), cooldown(time.Minute))
		e.advance(time.Minute)
		requireEvents(t, sub, eventWant{keystore.EventRecovered, k.ID, Start.Add(time.Minute)})
		e.eventuallyStats(1, 1, 0)
	})

	t.Run("a cool-down outside 1s..max is invalid and changes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{MaxCooldown: 10 * time.Minute})
		e.generate(1)
		leased := e.acquire(keystore.AcquireOptions{})
		for _, d := range []time.Duration{0, -time.Second, time.Second - time.Nanosecond, 10*time.Minute + time.Nanosecond} {
			_, err := e.store.UnblockWith(e.ctx, leased.ID, leased.Lease.Token, cooldown(d))
			requireCode(t, err, keystore.EINVALID)
			e.requireUnchanged(leased)
		}
		got := e.unblockWith(leased, cooldown(10*time.Minute))
		requireHeld(t, got, keystore.Cooling, Start.Add(10*time.Minute))
	})

	t.Run("failures: counted by failed unblocks and leases that run out; reset by an unblock without one", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		k := e.generate(1)[0]
		got := e.unblockWith(e.acquire(keystore.AcquireOptions{}), keystore.UnblockOptions{Failed: true})
		requireAvailable(t, got)
		require.Equal(t, keystore.History{TimesAcquired: 1, LastAcquiredAt: Start, Failures: 1, ConsecutiveFailures: 1}, got.History)
		e.acquire(keystore.AcquireOptions{})
		e.advance(keystore.DefaultLeaseTTL) // runs out: a failure
		got = e.get(k.ID)
		requireAvailable(t, got)
		require.EqualValues(t, 2, got.History.Failures)
		require.EqualValues(t, 2, got.History.ConsecutiveFailures)
		require.EqualValues(t, 1, got.History.LeasesExpired)
		got = e.unblockWith(e.acquire(keystore.AcquireOptions{}), keystore.UnblockOptions{})
		require.EqualValues(t, 2, got.History.Failures)
		require.Zero(t, got.History.ConsecutiveFailures)
		leased := e.acquire(keystore.AcquireOptions{})
		_, err := e.store.Unblock(e.ctx, leased.ID, leased.Lease.Token) // the plain Unblock resets too
		require.NoError(t, err)
		require.Zero(t, e.get(k.ID).History.ConsecutiveFailures)
	})

	t.Run("quarantine at -quarantine-after consecutive failed unblocks, cool-down or not", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 2})
		sub := e.subscribe(keystore.SubscribeOptions{})
		k := e.generate(1)[0]
		got := e.unblockWith(e.acquire(keystore.AcquireOptions{}), keystore.UnblockOptions{Failed: true, Cooldown: keystore.TTL(time.Second)})
		requireHeld(t, got, keystore.Cooling, Start.Add(time.Second))
		e.advance(time.Second)
		failed := keystore.UnblockOptions{Failed: true, Cooldown: keystore.TTL(time.Minute)}
		got = e.unblockWith(e.acquire(keystore.AcquireOptions{}), failed)
		requireHeld(t, got, keystore.Quarantined, time.Time{})
		require.EqualValues(t, 2, got.History.ConsecutiveFailures)
		e.requireCounts(keystore.Stats{Total: 1, Quarantined: 1})
		e.requireNoneFree()
		e.advance(4 * time.Minute) // no deadline ends a quarantine
		requireHeld(t, e.get(k.ID), keystore.Quarantined, time.Time{})
		e.requireNoneFree()
		requireEvents(t, sub,
			eventWant{keystore.EventGenerated, k.ID, Start},
			eventWant{keystore.EventAcquired, k.ID, Start},
			eventWant{keystore.EventUnblocked, k.ID, Start},
			eventWant{keystore.EventCooled, k.ID, Start},
			eventWant{keystore.EventRecovered, k.ID, Start.Add(time.Second)},
			eventWant{keystore.EventAcquired, k.ID, Start.Add(time.Second)},
			eventWant{keystore.EventUnblocked, k.ID, Start.Add(time.Second)},
			eventWant{keystore.EventQuarantined, k.ID, Start.Add(time.Second)},
		)
	})

	t.Run("a lease that runs out: RELEASED, then QUARANTINED at -quarantine-after", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 1, ExpiredLeaseCooldown: time.Minute})
		sub := e.subscribe(keystore.SubscribeOptions{})
		k := e.generate(1)[0]
		e.acquire(keystore.AcquireOptions{})
		deadline := Start.Add(keystore.DefaultLeaseTTL)
		e.advance(keystore.DefaultLeaseTTL)
		got := e.get(k.ID)
		requireHeld(t, got, keystore.Quarantined, time.Time{})
		require.Equal(t, keystore.History{TimesAcquired: 1, LeasesExpired: 1, LastAcquiredAt: Start, Failures: 1, ConsecutiveFailures: 1}, got.History)
		requireEvents(t, sub,
			eventWant{keystore.EventGenerated, k.ID, Start},
			eventWant{keystore.EventAcquired, k.ID, Start},
			eventWant{keystore.EventReleased, k.ID, deadline},
			eventWant{keystore.EventQuarantined, k.ID, deadline},
		)
	})

	t.Run("-expired-lease-cooldown: a lease that runs out cools from its deadline", func(t *testing.T) {
		e := setup(t, open, keystore.Options{ExpiredLeaseCooldown: 10 * time.Second})
		sub := e.subscribe(keystore.SubscribeOptions{})
		k := e.generate(1)[0]
		e.acquire(keystore.AcquireOptions{})
		deadline := Start.Add(keystore.DefaultLeaseTTL)
		until := deadline.Add(10 * time.Second)
		e.advance(keystore.DefaultLeaseTTL)
		requireHeld(t, e.get(k.ID), keystore.Cooling, until)
		e.requireNoneFree()
		e.advance(10*time.Second - time.Nanosecond)
		requireHeld(t, e.get(k.ID), keystore.Cooling, until)
		e.advance(time.Nanosecond)
		requireAvailable(t, e.get(k.ID))
		requireEvents(t, sub,
			eventWant{keystore.EventGenerated, k.ID, Start},
			eventWant{keystore.EventAcquired, k.ID, Start},
			eventWant{keystore.EventReleased, k.ID, deadline},
			eventWant{keystore.EventCooled, k.ID, deadline},
			eventWant{keystore.EventRecovered, k.ID, until},
		)
	})

	t.Run("a request long after a lease and its lock-delay both ended sees the key AVAILABLE", func(t *testing.T) {
		e := setup(t, open, keystore.Options{ExpiredLeaseCooldown: 10 * time.Second})
		sub := e.subscribe(keystore.SubscribeOptions{})
		k := e.generate(1)[0]
		e.acquire(keystore.AcquireOptions{})
		deadline := Start.Add(keystore.DefaultLeaseTTL)
		e.advance(keystore.DefaultLeaseTTL + time.Minute) // one jump past both deadlines
		requireAvailable(t, e.get(k.ID))
		requireEvents(t, sub,
			eventWant{keystore.EventGenerated, k.ID, Start},
			eventWant{keystore.EventAcquired, k.ID, Start},
			eventWant{keystore.EventReleased, k.ID, deadline},
			eventWant{keystore.EventCooled, k.ID, deadline},
			eventWant{keystore.EventRecovered, k.ID, deadline.Add(10 * time.Second)},
		)
	})

	t.Run("restore: COOLING or QUARANTINED to AVAILABLE, consecutive failures reset", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 1})
		sub := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventRestored}})
		keys := e.generate(2)
		cool := e.unblockWith(e.acquire(keystore.AcquireOptions{}), cooldown(time.Hour))
		quarantined := e.unblockWith(e.acquire(keystore.AcquireOptions{}), keystore.UnblockOptions{Failed: true})
		requireHeld(t, quarantined, keystore.Quarantined, time.Time{})
		e.requireCounts(keystore.Stats{Total: 2, Cooling: 1, Quarantined: 1})
		e.advance(time.Second)
		for _, k := range []keystore.Key{cool, quarantined} {
			got, err := e.store.Restore(e.ctx, k.ID)
			require.NoError(t, err)
			requireAvailable(t, got)
			require.Nil(t, got.CoolingUntil)
			require.Zero(t, got.History.ConsecutiveFailures)
			require.Equal(t, k.History.Failures, got.History.Failures, "restore forgets no failure")
		}
		e.requireCounts(keystore.Stats{Total: 2, Available: 2})
		requireEvents(t, sub,
			eventWant{keystore.EventRestored, cool.ID, Start.Add(time.Second)},
			eventWant{keystore.EventRestored, quarantined.ID, Start.Add(time.Second)},
		)
		// The cool-down's deadline has gone with it: nothing happens at its old end.
		e.advance(time.Hour)
		require.Len(t, sub.snapshot(), 2)
		_ = keys
	})

	t.Run("restore of an AVAILABLE or BLOCKED key is NOT_HELD_BACK and changes nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		keys := e.generate(2)
		leased := e.acquire(keystore.AcquireOptions{})
		free := keys[0]
		if free.ID == leased.ID {
			free = keys[1]
		}
		for _, k := range []keystore.Key{leased, free} {
			_, err := e.store.Restore(e.ctx, k.ID)
			requireCode(t, err, keystore.ENOTHELDBACK)
			e.requireUnchanged(e.get(k.ID))
		}
		requireLeased(t, e.get(leased.ID))
		requireAvailable(t, e.get(free.ID))
		_, err := e.store.Restore(e.ctx, randomID())
		requireCode(t, err, keystore.ENOTFOUND)
	})

	t.Run("unblock and renew of a key held back: NOT_BLOCKED, nothing changes", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 1})
		e.generate(2)
		first := e.acquire(keystore.AcquireOptions{})
		cool := e.unblockWith(first, cooldown(time.Minute))
		second := e.acquire(keystore.AcquireOptions{})
		quarantined := e.unblockWith(second, keystore.UnblockOptions{Failed: true})
		for _, c := range []struct{ leased, held keystore.Key }{{first, cool}, {second, quarantined}} {
			_, err := e.store.Unblock(e.ctx, c.held.ID, "")
			requireCode(t, err, keystore.ENOTBLOCKED)
			_, err = e.store.Unblock(e.ctx, c.held.ID, c.leased.Lease.Token)
			requireCode(t, err, keystore.ENOTBLOCKED)
			_, err = e.store.UnblockWith(e.ctx, c.held.ID, "", cooldown(time.Hour))
			requireCode(t, err, keystore.ENOTBLOCKED)
			_, err = e.store.Renew(e.ctx, c.held.ID, c.leased.Lease.Token, nil)
			requireCode(t, err, keystore.ENOTBLOCKED)
			e.requireUnchanged(c.held)
		}
	})

	t.Run("keep-alive applies in every state: a key held back that is not kept alive expires", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 1})
		sub := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventExpired}})
		keys := e.generate(3)
		cool := e.unblockWith(e.acquire(keystore.AcquireOptions{}), cooldown(time.Hour))
		quarantined := e.unblockWith(e.acquire(keystore.AcquireOptions{}), keystore.UnblockOptions{Failed: true})
		e.advance(time.Minute)
		kept, err := e.store.KeepAlive(e.ctx, quarantined.ID)
		require.NoError(t, err)
		requireHeld(t, kept, keystore.Quarantined, time.Time{})
		requireTime(t, Start.Add(time.Minute+keystore.DefaultKeepAliveTTL), kept.ExpiresAt, "ExpiresAt")
		e.advance(keystore.DefaultKeepAliveTTL - time.Minute)
		_, err = e.store.Get(e.ctx, cool.ID)
		requireCode(t, err, keystore.ENOTFOUND) // it dies COOLING, its cool-down unfinished
		requireHeld(t, e.get(quarantined.ID), keystore.Quarantined, time.Time{})
		e.requireCounts(keystore.Stats{Total: 1, Quarantined: 1})
		events := sub.waitFor(t, 2)
		require.Len(t, events, 2)
		expired := map[string]bool{events[0].KeyID: true, events[1].KeyID: true}
		require.True(t, expired[cool.ID], "the COOLING key expired")
		e.advance(time.Minute)
		_, err = e.store.Get(e.ctx, quarantined.ID)
		requireCode(t, err, keystore.ENOTFOUND)
		_ = keys
	})

	t.Run("a waiter is served when a cool-down ends, and by a restore", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 1})
		k := e.generate(1)[0]
		e.unblockWith(e.acquire(keystore.AcquireOptions{}), cooldown(5*time.Second))
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, 1)
		e.advance(5 * time.Second)
		r := e.result(done)
		require.NoError(t, r.err)
		require.Equal(t, k.ID, r.key.ID)
		requireLeased(t, r.key)

		e.unblockWith(r.key, keystore.UnblockOptions{Failed: true})
		done = e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, 1)
		requirePending(t, done)
		_, err := e.store.Restore(e.ctx, k.ID)
		require.NoError(t, err)
		r = e.result(done)
		require.NoError(t, r.err)
		require.Equal(t, k.ID, r.key.ID)
	})

	t.Run("stats and listings know the states held back", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 1})
		keys := e.generate(5)
		cool := e.unblockWith(e.acquire(keystore.AcquireOptions{}), cooldown(time.Minute))
		quarantined := e.unblockWith(e.acquire(keystore.AcquireOptions{}), keystore.UnblockOptions{Failed: true})
		leased := e.acquire(keystore.AcquireOptions{})
		e.requireCounts(keystore.Stats{Total: 5, Available: 2, Blocked: 1, Cooling: 1, Quarantined: 1})
		for status, want := range map[keystore.Status]string{keystore.Cooling: cool.ID, keystore.Quarantined: quarantined.ID, keystore.Blocked: leased.ID} {
			page, err := e.store.List(e.ctx, keystore.ListOptions{Status: status, First: 10})
			require.NoError(t, err)
			require.Len(t, page.Keys, 1, "keys %s", status)
			require.Equal(t, want, page.Keys[0].ID)
			require.Equal(t, status, page.Keys[0].Status)
		}
		page, err := e.store.List(e.ctx, keystore.ListOptions{First: 10})
		require.NoError(t, err)
		require.Len(t, page.Keys, 5)
		for _, k := range page.Keys {
			if k.ID == cool.ID {
				requireHeld(t, k, keystore.Cooling, Start.Add(time.Minute))
			}
		}
		pools, err := e.store.Pools(e.ctx)
		require.NoError(t, err)
		require.Equal(t, 1, pools[0].Stats.Cooling)
		require.Equal(t, 1, pools[0].Stats.Quarantined)
		_ = keys
	})
}
