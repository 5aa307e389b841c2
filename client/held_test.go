package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/keystore"
)

// TestImportCoolAndRestore: imported keys come with their secret in the lease, a
// Release with a cool-down holds the key back, RestoreKey brings it back, and a
// duplicate import names its index.
func TestImportCoolAndRestore(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ts := newTestServer(t, clock, keystore.Options{QuarantineAfter: 3})
	c := ts.client(t)
	ctx := testContext(t)

	keys, err := c.ImportKeys(ctx, []client.KeyInput{{Secret: "sk-one", Name: "one"}}, client.ImportOptions{Pool: "vendor"})
	require.NoError(t, err)
	require.Len(t, keys, 1)
	assert.Equal(t, "one", keys[0].Name)
	assert.Equal(t, "vendor", keys[0].Pool)
	_, err = c.ImportKeys(ctx, []client.KeyInput{{Secret: "sk-two"}, {Secret: "sk-one"}}, client.ImportOptions{Pool: "vendor"})
	require.ErrorIs(t, err, client.ErrAlreadyExists)
	var coded *client.Error
	require.True(t, errors.As(err, &coded))
	assert.Equal(t, 1, coded.Index())

	l, err := c.Lease(ctx, client.AcquireOptions{Pool: "vendor"})
	require.NoError(t, err)
	assert.Equal(t, "sk-one", l.Secret())
	require.NoError(t, l.Release(ctx, client.Cooldown(time.Minute), client.Failed()))
	k, err := c.Key(ctx, keys[0].ID)
	require.NoError(t, err)
	assert.Equal(t, client.Cooling, k.Status)
	require.NotNil(t, k.CoolingUntil)
	assert.Equal(t, time.Minute, k.CoolingUntil.Sub(clock.Now()))
	assert.Equal(t, 1, k.History.Failures)
	assert.Equal(t, 1, k.History.ConsecutiveFailures)
	s, err := c.PoolStats(ctx, "vendor")
	require.NoError(t, err)
	assert.Equal(t, client.Stats{Total: 1, Cooling: 1}, s)
	_, err = c.AcquireKey(ctx, client.AcquireOptions{Pool: "vendor"})
	require.ErrorIs(t, err, client.ErrNotFound)

	k, err = c.RestoreKey(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, client.Available, k.Status)
	_, err = c.RestoreKey(ctx, k.ID)
	require.ErrorIs(t, err, client.ErrNotHeldBack)

	info, err := c.AcquireKey(ctx, client.AcquireOptions{Pool: "vendor"})
	require.NoError(t, err)
	assert.Equal(t, "sk-one", info.Secret)
	k, err = c.UnblockKeyWith(ctx, k.ID, info.Token, client.UnblockOptions{Failed: true})
	require.NoError(t, err)
	assert.Equal(t, client.Available, k.Status)
	assert.Equal(t, 1, k.History.ConsecutiveFailures, "restore started the count again")
	assert.Equal(t, 2, k.History.Failures)
}
