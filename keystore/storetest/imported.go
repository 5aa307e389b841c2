package storetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// Keys of one's own (CONTRACT "Your own keys"): imported with their secrets, kept until
// deleted unless a keep-alive TTL is given, duplicates refused.

func (e *env) importKeys(opts keystore.ImportOptions, secrets ...string) []keystore.Key {
	e.t.Helper()
	in := make([]keystore.KeyInput, len(secrets))
	for i, s := range secrets {
		in[i] = keystore.KeyInput{Secret: s, Name: "name of " + s}
	}
	keys, err := e.store.Import(e.ctx, in, opts)
	require.NoError(e.t, err)
	require.Len(e.t, keys, len(secrets))
	return keys
}

// advanceArmed moves the clock by d once timers timers are armed: a store whose keys
// have no deadline arms none.
func (e *env) advanceArmed(d time.Duration, timers int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, waitFor)
	defer cancel()
	require.NoError(e.t, e.clock.BlockUntilContext(ctx, timers), "the store armed fewer than %d timers", timers)
	e.clock.Advance(d)
}

// Secrets shaped like vendors' keys, long enough to find in any text.
const (
	secretA = "sk-live-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	secretB = "sk-live-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
	secretC = "sk-live-CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"
)

func testImport(t *testing.T, open Opener) {
	t.Run("imports AVAILABLE keys with ids of the store's and names, kept until deleted", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		sub := e.subscribe(keystore.SubscribeOptions{})
		keys := e.importKeys(keystore.ImportOptions{}, secretA, secretB)
		for i, k := range keys {
			requireAvailable(t, k)
			require.Regexp(t, urlSafe, k.ID)
			require.NotContains(t, k.ID, "sk-live")
			require.Equal(t, keystore.DefaultPool, k.Pool)
			require.Equal(t, "name of "+[]string{secretA, secretB}[i], k.Name)
			requireTime(t, Start, k.CreatedAt, "CreatedAt")
			requireTime(t, keystore.Never, k.ExpiresAt, "ExpiresAt of an imported key without keepAliveTTL")
			requireSameKey(t, k, e.get(k.ID))
		}
		requireEvents(t, sub,
			eventWant{keystore.EventImported, keys[0].ID, Start},
			eventWant{keystore.EventImported, keys[1].ID, Start},
		)
		e.advanceArmed(30*24*time.Hour, 0) // a month without keep-alive
		e.requireCounts(keystore.Stats{Total: 2, Available: 2})
		k, err := e.store.KeepAlive(e.ctx, keys[0].ID)
		require.NoError(t, err)
		requireTime(t, keystore.Never, k.ExpiresAt, "keep-alive leaves a key kept until deleted as it is")
		require.NoError(t, e.store.Delete(e.ctx, keys[0].ID))
		e.requireCounts(keystore.Stats{Total: 1, Available: 1})
	})

	t.Run("the secret is in the holder's answers only: acquire and renew", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		imported := e.importKeys(keystore.ImportOptions{}, secretA)[0]
		leased := e.acquire(keystore.AcquireOptions{})
		require.Equal(t, imported.ID, leased.ID)
		require.Equal(t, secretA, leased.Lease.Secret)
		renewed, err := e.store.Renew(e.ctx, leased.ID, leased.Lease.Token, nil)
		require.NoError(t, err)
		require.Equal(t, secretA, renewed.Lease.Secret)
		got := e.get(leased.ID)
		require.NotNil(t, got.Lease)
		require.Empty(t, got.Lease.Secret, "a lease read by Get carries no secret")
		page, err := e.store.List(e.ctx, keystore.ListOptions{First: 10})
		require.NoError(t, err)
		require.Empty(t, page.Keys[0].Lease.Secret, "a lease read by List carries no secret")
		unblocked, err := e.store.Unblock(e.ctx, leased.ID, leased.Lease.Token)
		require.NoError(t, err)
		require.Nil(t, unblocked.Lease)

		// A generated key's secret is its id.
		generated := e.generate(1)[0]
		require.NoError(t, e.store.Delete(e.ctx, imported.ID))
		leased = e.acquire(keystore.AcquireOptions{})
		require.Equal(t, generated.ID, leased.Lease.Secret)
	})

	t.Run("a waiter served an imported key gets its secret", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		done := e.startWaiter(e.ctx, keystore.AcquireOptions{Wait: 20 * time.Second}, 1)
		e.importKeys(keystore.ImportOptions{}, secretA)
		r := e.result(done)
		require.NoError(t, r.err)
		require.Equal(t, secretA, r.key.Lease.Secret)
	})

	t.Run("a secret held already is ALREADY_EXISTS at its index, and nothing is imported", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		sub := e.subscribe(keystore.SubscribeOptions{})
		first := e.importKeys(keystore.ImportOptions{}, secretA)[0]
		sub.waitFor(t, 1)
		for _, c := range []struct {
			secrets []string
			index   int
		}{
			{[]string{secretB, secretA, secretC}, 1},
			{[]string{secretB, secretC, secretB}, 2}, // twice in one request
			{[]string{secretA, secretB, secretB}, 0},
		} {
			in := make([]keystore.KeyInput, len(c.secrets))
			for i, s := range c.secrets {
				in[i] = keystore.KeyInput{Secret: s}
			}
			_, err := e.store.Import(e.ctx, in, keystore.ImportOptions{})
			requireCode(t, err, keystore.EALREADYEXISTS)
			var coded *keystore.Error
			require.ErrorAs(t, err, &coded)
			require.Equal(t, c.index, coded.Index)
			for _, s := range c.secrets {
				require.NotContains(t, err.Error(), s, "the error repeats a secret")
			}
			e.requireCounts(keystore.Stats{Total: 1, Available: 1})
		}
		require.Len(t, sub.snapshot(), 1, "a refused import publishes nothing")
		// Another pool has its own secrets; a deleted key frees its secret.
		e.importKeys(keystore.ImportOptions{Pool: "other"}, secretA)
		require.NoError(t, e.store.Delete(e.ctx, first.ID))
		e.importKeys(keystore.ImportOptions{}, secretA)
	})

	t.Run("with keepAliveTTL the keep-alive rule applies, for that TTL", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		sub := e.subscribe(keystore.SubscribeOptions{Types: []keystore.EventType{keystore.EventExpired}})
		short := e.importKeys(keystore.ImportOptions{KeepAliveTTL: keystore.TTL(time.Minute)}, secretA)[0]
		same := e.importKeys(keystore.ImportOptions{KeepAliveTTL: keystore.TTL(keystore.DefaultKeepAliveTTL)}, secretB)[0]
		long := e.importKeys(keystore.ImportOptions{KeepAliveTTL: keystore.TTL(time.Hour)}, secretC)[0]
		requireTime(t, Start.Add(time.Minute), short.ExpiresAt, "ExpiresAt")
		requireTime(t, Start.Add(keystore.DefaultKeepAliveTTL), same.ExpiresAt, "ExpiresAt")
		requireTime(t, Start.Add(time.Hour), long.ExpiresAt, "ExpiresAt")

		e.advance(30 * time.Second)
		kept, err := e.store.KeepAlive(e.ctx, long.ID)
		require.NoError(t, err)
		requireTime(t, Start.Add(30*time.Second+time.Hour), kept.ExpiresAt, "ExpiresAt after keep-alive")
		e.advance(30*time.Second - time.Nanosecond)
		e.get(short.ID)
		e.advance(time.Nanosecond)
		_, err = e.store.Get(e.ctx, short.ID)
		requireCode(t, err, keystore.ENOTFOUND)
		e.advance(keystore.DefaultKeepAliveTTL - time.Minute)
		_, err = e.store.Get(e.ctx, same.ID)
		requireCode(t, err, keystore.ENOTFOUND)
		e.requireCounts(keystore.Stats{Total: 1, Available: 1})
		e.advance(time.Hour + 30*time.Second - keystore.DefaultKeepAliveTTL)
		_, err = e.store.Get(e.ctx, long.ID)
		requireCode(t, err, keystore.ENOTFOUND)
		requireEvents(t, sub,
			eventWant{keystore.EventExpired, short.ID, Start.Add(time.Minute)},
			eventWant{keystore.EventExpired, same.ID, Start.Add(keystore.DefaultKeepAliveTTL)},
			eventWant{keystore.EventExpired, long.ID, Start.Add(30*time.Second + time.Hour)},
		)
		// Its secret is free again.
		e.importKeys(keystore.ImportOptions{}, secretA)
	})

	t.Run("keys of every kind are picked, generated and imported alike", func(t *testing.T) {
		e := setup(t, open, keystore.Options{})
		e.importKeys(keystore.ImportOptions{}, secretA)
		e.importKeys(keystore.ImportOptions{KeepAliveTTL: keystore.TTL(48 * time.Hour)}, secretB)
		e.generate(1)
		seen := map[string]bool{}
		for range 3 {
			seen[e.acquire(keystore.AcquireOptions{}).Lease.Secret] = true
		}
		require.Len(t, seen, 3)
		require.True(t, seen[secretA] && seen[secretB])
		e.requireNoneFree()
	})

	t.Run("invalid input is BAD_USER_INPUT and imports nothing", func(t *testing.T) {
		e := setup(t, open, keystore.Options{MaxGenerate: 3})
		ok := keystore.KeyInput{Secret: "fine"}
		for name, c := range map[string]struct {
			keys []keystore.KeyInput
			opts keystore.ImportOptions
		}{
			"no keys":             {nil, keystore.ImportOptions{}},
			"more than max":       {[]keystore.KeyInput{{Secret: "a"}, {Secret: "b"}, {Secret: "c"}, {Secret: "d"}}, keystore.ImportOptions{}},
			"empty secret":        {[]keystore.KeyInput{ok, {Secret: ""}}, keystore.ImportOptions{}},
			"over-long secret":    {[]keystore.KeyInput{{Secret: strings.Repeat("s", keystore.MaxSecret+1)}}, keystore.ImportOptions{}},
			"over-long name":      {[]keystore.KeyInput{{Secret: "s", Name: strings.Repeat("n", keystore.MaxName+1)}}, keystore.ImportOptions{}},
			"control in name":     {[]keystore.KeyInput{{Secret: "s", Name: "a\nb"}}, keystore.ImportOptions{}},
			"short keepAliveTTL":  {[]keystore.KeyInput{ok}, keystore.ImportOptions{KeepAliveTTL: keystore.TTL(time.Second - 1)}},
			"zero keepAliveTTL":   {[]keystore.KeyInput{ok}, keystore.ImportOptions{KeepAliveTTL: keystore.TTL(0)}},
			"over-long keepAlive": {[]keystore.KeyInput{ok}, keystore.ImportOptions{KeepAliveTTL: keystore.TTL(keystore.MaxKeepAliveTTL + 1)}},
			"bad pool":            {[]keystore.KeyInput{ok}, keystore.ImportOptions{Pool: "no pool"}},
		} {
			_, err := e.store.Import(e.ctx, c.keys, c.opts)
			requireCode(t, err, keystore.EINVALID)
			require.NotContains(t, err.Error(), "fine", name)
		}
		e.requireCounts(keystore.Stats{})
		keys, err := e.store.Import(e.ctx, []keystore.KeyInput{{Secret: strings.Repeat("s", keystore.MaxSecret), Name: strings.Repeat("n", keystore.MaxName)}}, keystore.ImportOptions{})
		require.NoError(t, err)
		require.Len(t, keys, 1)
	})

	t.Run("an imported secret is in no event", func(t *testing.T) {
		e := setup(t, open, keystore.Options{QuarantineAfter: 2})
		sub := e.subscribe(keystore.SubscribeOptions{})
		e.importKeys(keystore.ImportOptions{KeepAliveTTL: keystore.TTL(time.Minute)}, secretA)
		leased := e.acquire(keystore.AcquireOptions{Holder: "me"})
		e.unblockWith(leased, keystore.UnblockOptions{Failed: true, Cooldown: keystore.TTL(time.Second)})
		e.advance(time.Second)
		leased = e.acquire(keystore.AcquireOptions{})
		e.unblockWith(leased, keystore.UnblockOptions{Failed: true})
		_, err := e.store.Restore(e.ctx, leased.ID)
		require.NoError(t, err)
		e.advance(time.Minute)
		events := sub.waitFor(t, 10) // IMPORTED … EXPIRED
		for _, ev := range events {
			require.NotContains(t, ev.KeyID+ev.Holder+ev.Pool+ev.Stream, "sk-live", "event %+v", ev)
		}
		require.Equal(t, keystore.EventExpired, events[len(events)-1].Type)
	})
}
