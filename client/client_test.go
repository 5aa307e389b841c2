package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/keystore"
)

func TestNewEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:8080":          "http://localhost:8080/graphql",
		"http://localhost:8080/":         "http://localhost:8080/graphql",
		"https://kp.example.com/pool":    "https://kp.example.com/pool/graphql",
		"http://localhost:8080/graphql":  "http://localhost:8080/graphql",
		"https://kp.example.com/graphql": "https://kp.example.com/graphql",
	} {
		c, err := client.New(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, c.Endpoint(), in)
	}
	for _, bad := range []string{"localhost:8080", "ftp://host", "http://", "://x"} {
		_, err := client.New(bad)
		assert.Error(t, err, bad)
	}
}

// TestOperations runs every query and mutation against the real server and checks
// what comes back, and what was sent: an optional argument not given is not sent.
func TestOperations(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ts := newTestServer(t, clock, keystore.Options{LeaseTTL: time.Minute, KeepAliveTTL: 5 * time.Minute})
	c := ts.client(t)
	ctx := testContext(t)

	keys, err := c.GenerateKeys(ctx, 2)
	require.NoError(t, err)
	require.Len(t, keys, 2)
	for _, k := range keys {
		assert.Equal(t, client.Available, k.Status)
		assert.Nil(t, k.Lease)
		assert.Equal(t, clock.Now().UTC(), k.CreatedAt.UTC())
		assert.Equal(t, 5*time.Minute, k.ExpiresAt.Sub(k.CreatedAt))
		assert.Nil(t, k.History.LastAcquiredAt)
	}

	lease, err := c.AcquireKey(ctx, client.AcquireOptions{})
	require.NoError(t, err)
	assert.NotContains(t, ts.last(t, "AcquireKey"), "ttl", "no ttl given, none sent")
	assert.NotContains(t, ts.last(t, "AcquireKey"), "wait")
	assert.Equal(t, time.Minute, lease.ExpiresAt.Sub(lease.AcquiredAt), "the server's default lease")
	require.NotNil(t, lease.Key)
	assert.Equal(t, client.Blocked, lease.Key.Status)
	assert.Positive(t, lease.Fence)
	id := lease.Key.ID

	got, err := c.Key(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, got.Lease)
	assert.Equal(t, lease.Token, got.Lease.Token)
	assert.Equal(t, lease.Fence, got.Lease.Fence)
	assert.Nil(t, got.Lease.Key, "a key's lease does not repeat the key")
	assert.Equal(t, 1, got.History.TimesAcquired)
	require.NotNil(t, got.History.LastAcquiredAt)

	other, err := c.AcquireKey(ctx, client.AcquireOptions{TTL: 90 * time.Second})
	require.NoError(t, err)
	assert.Equal(t, "1m30s", ts.last(t, "AcquireKey")["ttl"])
	assert.Equal(t, 90*time.Second, other.ExpiresAt.Sub(other.AcquiredAt))
	assert.Greater(t, other.Fence, lease.Fence, "fences grow")

	_, err = c.AcquireKey(ctx, client.AcquireOptions{})
	assert.ErrorIs(t, err, client.ErrNotFound, "no key is free")

	clock.Advance(10 * time.Second)
	renewed, err := c.RenewLease(ctx, id, lease.Token, 2*time.Minute)
	require.NoError(t, err)
	assert.Equal(t, "2m0s", ts.last(t, "RenewLease")["ttl"])
	assert.Equal(t, clock.Now().Add(2*time.Minute).UTC(), renewed.ExpiresAt.UTC())
	assert.Equal(t, lease.AcquiredAt, renewed.AcquiredAt)
	_, err = c.RenewLease(ctx, id, lease.Token, 0)
	require.NoError(t, err)
	assert.NotContains(t, ts.last(t, "RenewLease"), "ttl")

	_, err = c.UnblockKey(ctx, id, other.Token)
	assert.ErrorIs(t, err, client.ErrLeaseMismatch)
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, client.ErrLeaseMismatch, e.Code)
	assert.NotEmpty(t, e.Message)
	assert.Equal(t, client.ErrLeaseMismatch, client.ErrorCode(err))

	freed, err := c.UnblockKey(ctx, id, lease.Token)
	require.NoError(t, err)
	assert.Equal(t, client.Available, freed.Status)
	_, err = c.UnblockKey(ctx, id, "")
	assert.ErrorIs(t, err, client.ErrNotBlocked)
	assert.NotContains(t, ts.last(t, "UnblockKey"), "token", "no token given, none sent")
	_, err = c.UnblockKey(ctx, other.Key.ID, "")
	require.NoError(t, err, "without a token, whatever lease holds the key ends")

	before := keys[0].ExpiresAt
	clock.Advance(time.Minute)
	alive, err := c.KeepAlive(ctx, keys[0].ID)
	require.NoError(t, err)
	assert.Equal(t, before.Add(70*time.Second), alive.ExpiresAt)

	stats, err := c.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, client.Stats{Total: 2, Available: 2}, stats)

	require.NoError(t, c.DeleteKey(ctx, id))
	assert.ErrorIs(t, c.DeleteKey(ctx, id), client.ErrNotFound)
	_, err = c.Key(ctx, id)
	assert.ErrorIs(t, err, client.ErrNotFound, "a null key is NOT_FOUND")
	_, err = c.KeepAlive(ctx, id)
	assert.ErrorIs(t, err, client.ErrNotFound)
	_, err = c.RenewLease(ctx, id, lease.Token, 0)
	assert.ErrorIs(t, err, client.ErrNotFound)
}

func TestBadInput(t *testing.T) {
	ts := newTestServer(t, clockwork.NewFakeClock(), keystore.Options{MaxGenerate: 10})
	c := ts.client(t)
	ctx := testContext(t)

	_, err := c.GenerateKeys(ctx, 11)
	assert.ErrorIs(t, err, client.ErrBadUserInput)
	_, err = c.GenerateKeys(ctx, 0)
	assert.ErrorIs(t, err, client.ErrBadUserInput)
	_, err = c.AcquireKey(ctx, client.AcquireOptions{TTL: 500 * time.Millisecond})
	assert.ErrorIs(t, err, client.ErrBadUserInput, "below the shortest lease")
	_, err = c.AcquireKey(ctx, client.AcquireOptions{Wait: time.Minute})
	assert.ErrorIs(t, err, client.ErrBadUserInput, "past the longest wait")
	assert.NotErrorIs(t, err, client.ErrNotFound)
}

func TestAcquireWaits(t *testing.T) {
	ts := newTestServer(t, clockwork.NewFakeClock(), keystore.Options{})
	c := ts.client(t)
	ctx := testContext(t)
	_, err := c.GenerateKeys(ctx, 1)
	require.NoError(t, err)
	held, err := c.AcquireKey(ctx, client.AcquireOptions{})
	require.NoError(t, err)

	type result struct {
		lease client.LeaseInfo
		err   error
	}
	served := make(chan result, 1)
	go func() {
		l, err := c.AcquireKey(ctx, client.AcquireOptions{Wait: 20 * time.Second})
		served <- result{l, err}
	}()
	waitFor(t, "the acquire waits", func() bool { return ts.obs.waiters.Load() == 1 })
	assert.Equal(t, "20s", ts.last(t, "AcquireKey")["wait"])
	_, err = c.UnblockKey(ctx, held.Key.ID, held.Token)
	require.NoError(t, err)
	r := <-served
	require.NoError(t, r.err)
	assert.Equal(t, held.Key.ID, r.lease.Key.ID, "the waiter gets the key freed")

	go func() {
		_, err := c.AcquireKey(ctx, client.AcquireOptions{Wait: 5 * time.Second})
		served <- result{err: err}
	}()
	waitFor(t, "the acquire waits", func() bool { return ts.obs.waiters.Load() == 1 })
	ts.clock.(*clockwork.FakeClock).Advance(5 * time.Second)
	assert.ErrorIs(t, (<-served).err, client.ErrNotFound, "nothing came free in time")
}

// TestTransportErrors checks the errors that are not the server's answers: a page
// that is not GraphQL keeps its status, and an unreachable server is not an *Error.
func TestTransportErrors(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	c, err := client.New(proxy.URL)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Stats(context.Background())
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusBadGateway, e.StatusCode)
	assert.Empty(t, e.Code)
	assert.Contains(t, e.Error(), "502")

	proxy.Close()
	_, err = c.Stats(context.Background())
	require.Error(t, err)
	assert.False(t, errors.As(err, &e), "a refused connection is not an answer: %v", err)
	assert.Empty(t, client.ErrorCode(err))
}
