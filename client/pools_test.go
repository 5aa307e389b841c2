package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/keystore"
)

// TestPoolsHoldersAndKeys: the client sends the pool and holder, reads pools, stats
// of a pool and every pool, and walks the keys a page at a time.
func TestPoolsHoldersAndKeys(t *testing.T) {
	ts := newTestServer(t, clockwork.NewFakeClock(), keystore.Options{})
	c := ts.client(t)
	ctx := testContext(t)

	made, err := c.GenerateKeysIn(ctx, "openai", 5)
	require.NoError(t, err)
	assert.Equal(t, "openai", made[0].Pool)
	assert.Equal(t, "openai", ts.last(t, "GenerateKeys")["pool"])
	_, err = c.GenerateKeys(ctx, 1)
	require.NoError(t, err)
	assert.NotContains(t, ts.last(t, "GenerateKeys"), "pool", "no pool given, none sent")

	lease, err := c.AcquireKey(ctx, client.AcquireOptions{Pool: "openai", Holder: "worker-3"})
	require.NoError(t, err)
	assert.Equal(t, "worker-3", lease.Holder)
	assert.Equal(t, "openai", lease.Key.Pool)
	assert.Equal(t, "worker-3", lease.Key.Lease.Holder)
	_, err = c.AcquireKey(ctx, client.AcquireOptions{Pool: "nope"})
	assert.ErrorIs(t, err, client.ErrNotFound)

	s, err := c.PoolStats(ctx, "openai")
	require.NoError(t, err)
	assert.Equal(t, client.Stats{Total: 5, Available: 4, Blocked: 1}, s)
	all, err := c.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, 6, all.Total)
	pools, err := c.Pools(ctx)
	require.NoError(t, err)
	require.Len(t, pools, 2)
	assert.Equal(t, "default", pools[0].Name)
	assert.Equal(t, "openai", pools[1].Name)
	assert.Equal(t, 1, pools[1].Stats.Blocked)

	seen := map[string]bool{}
	for k, err := range c.Keys(ctx, client.ListOptions{Pool: "openai", PageSize: 2}) {
		require.NoError(t, err)
		assert.False(t, seen[k.ID], "key %s twice", k.ID)
		seen[k.ID] = true
	}
	assert.Len(t, seen, 5)
	var blocked []client.Key
	for k, err := range c.Keys(ctx, client.ListOptions{Status: client.Blocked}) {
		require.NoError(t, err)
		blocked = append(blocked, k)
	}
	require.Len(t, blocked, 1)
	assert.NotContains(t, ts.last(t, "ListKeys"), "first", "no page size given, none sent: the server's default")
	assert.Equal(t, lease.Key.ID, blocked[0].ID)
	for range c.Keys(ctx, client.ListOptions{}) {
		break // stopping early is fine
	}
	for _, err := range c.Keys(ctx, client.ListOptions{PageSize: 5000}) {
		assert.ErrorIs(t, err, client.ErrBadUserInput)
	}
}

// TestLeaseInAPoolWatchesItsPool: a lease follows its key's events on its own pool's
// stream, so a loss there is told at once.
func TestLeaseInAPoolWatchesItsPool(t *testing.T) {
	e := newLeaseEnv(t, keystore.Options{LeaseTTL: 30 * time.Second}, 0)
	_, err := e.ts.store.Generate(context.Background(), "p", 1)
	require.NoError(t, err)
	l := e.lease(t, client.AcquireOptions{Pool: "p"})
	e.steps(t, l, 1, time.Second)
	e.ts.waitSubscribers(t, 1)
	require.NoError(t, e.ts.store.Delete(context.Background(), l.KeyID()))
	select { // no clock moves: only the event can tell
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the loss was not reported by the pool's events")
	}
	assert.ErrorIs(t, l.Err(), client.ErrLeaseTaken)
}
