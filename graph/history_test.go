package graph_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestHistory: history answers the samples the store records, oldest first, from
// since on, with every count; a bad pool name is refused.
func TestHistory(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	pool := e.store.(*keystore.Pool)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go pool.RecordHistory(ctx)
	e.mustPost(t, `mutation { generateKeys(count: 2, pool: "a") { id } }`, nil, nil)
	tick := func() {
		t.Helper()
		before, err := pool.History(t.Context(), "a", time.Time{})
		require.NoError(t, err)
		require.NoError(t, e.clock.BlockUntilContext(t.Context(), 2)) // the expirer's timer, the sampler's ticker
		e.clock.Advance(keystore.HistoryInterval)
		require.Eventually(t, func() bool {
			now, err := pool.History(t.Context(), "a", time.Time{})
			return err == nil && len(now) == len(before)+1
		}, 10*time.Second, time.Millisecond)
	}
	tick()
	e.mustPost(t, `mutation { acquireKey(pool: "a") { fence } }`, nil, nil)
	tick()

	type sample struct {
		At                                 time.Time
		Total, Available, Blocked, Waiting int
	}
	var got struct {
		History []sample
		Later   []sample
		Default []sample
	}
	e.mustPost(t, `{ history(pool: "a") { at total available blocked waiting } }`, nil, &got)
	e.mustPost(t, `query($since: Time) { later: history(pool: "a", since: $since) { total blocked } }`,
		map[string]any{"since": e.clock.Now().Format(time.RFC3339Nano)}, &got)
	require.Len(t, got.History, 2)
	require.Equal(t, sample{At: got.History[0].At, Total: 2, Available: 2}, got.History[0])
	require.Equal(t, sample{At: got.History[1].At, Total: 2, Available: 1, Blocked: 1}, got.History[1])
	require.True(t, got.History[1].At.Sub(got.History[0].At) == keystore.HistoryInterval)
	require.Equal(t, []sample{{Total: 2, Blocked: 1}}, got.Later)

	e.mustPost(t, `{ default: history { total } }`, nil, &got)
	require.Len(t, got.Default, 2, "the default pool is sampled too")
	requireCode(t, e.post(t, `{ history(pool: "not a name") { total } }`, nil), "BAD_USER_INPUT")
	// Priced as a full page of keys: two do not fit in one operation.
	requireCode(t, e.post(t, `{ a: history { total } b: history { total } }`, nil), "COMPLEXITY_LIMIT_EXCEEDED")
}
