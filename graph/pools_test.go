package graph_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestPoolsHoldersAndListing drives the pools, holders and listing through GraphQL:
// every argument reaches the store, and every field shows what it holds.
func TestPoolsHoldersAndListing(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	var made struct {
		A []struct{ ID, Pool string }
		D []struct{ Pool string }
	}
	e.mustPost(t, `mutation { a: generateKeys(count: 3, pool: "a") { id pool } d: generateKeys { pool } }`, nil, &made)
	require.Len(t, made.A, 3)
	assert.Equal(t, "a", made.A[0].Pool)
	assert.Equal(t, "default", made.D[0].Pool)

	var acquired struct {
		AcquireKey struct {
			Holder *string
			Key    struct{ ID, Pool string }
		}
		Anon struct{ Holder *string }
	}
	e.mustPost(t, `mutation { acquireKey(pool: "a", holder: "ci <job 7>") { holder key { id pool } } anon: acquireKey(pool: "a") { holder } }`, nil, &acquired)
	require.NotNil(t, acquired.AcquireKey.Holder)
	assert.Equal(t, "ci <job 7>", *acquired.AcquireKey.Holder)
	assert.Equal(t, "a", acquired.AcquireKey.Key.Pool)
	assert.Nil(t, acquired.Anon.Holder, "no holder is null")

	var read struct {
		Key struct {
			Lease struct{ Holder string }
		}
		Stats struct{ Total, Blocked, Waiting int }
		All   struct{ Total int }
		Never struct{ Total int }
		Pools []struct {
			Name  string
			Stats struct{ Total int }
		}
		Keys struct {
			Nodes    []struct{ ID, Status string }
			PageInfo struct {
				EndCursor   *string
				HasNextPage bool
			}
		}
	}
	e.mustPost(t, `query($id: ID!) { key(id: $id) { lease { holder } } stats(pool: "a") { total blocked waiting }
		all: stats { total } never: stats(pool: "never") { total } pools { name stats { total } }
		keys(pool: "a", status: BLOCKED, first: 1) { nodes { id status } pageInfo { endCursor hasNextPage } } }`,
		map[string]any{"id": acquired.AcquireKey.Key.ID}, &read)
	assert.Equal(t, "ci <job 7>", read.Key.Lease.Holder)
	assert.Equal(t, 3, read.Stats.Total)
	assert.Equal(t, 2, read.Stats.Blocked)
	assert.Equal(t, 4, read.All.Total)
	assert.Equal(t, 0, read.Never.Total)
	require.Len(t, read.Pools, 2)
	assert.Equal(t, "a", read.Pools[0].Name)
	assert.Equal(t, 1, read.Pools[1].Stats.Total)
	require.Len(t, read.Keys.Nodes, 1)
	assert.Equal(t, "BLOCKED", read.Keys.Nodes[0].Status)
	assert.True(t, read.Keys.PageInfo.HasNextPage)
	require.NotNil(t, read.Keys.PageInfo.EndCursor)

	var next struct {
		Keys struct {
			Nodes    []struct{ ID string }
			PageInfo struct {
				EndCursor   *string
				HasNextPage bool
			}
		}
	}
	e.mustPost(t, `query($after: String) { keys(pool: "a", status: BLOCKED, first: 1, after: $after) { nodes { id } pageInfo { endCursor hasNextPage } } }`,
		map[string]any{"after": *read.Keys.PageInfo.EndCursor}, &next)
	require.Len(t, next.Keys.Nodes, 1)
	assert.NotEqual(t, read.Keys.Nodes[0].ID, next.Keys.Nodes[0].ID)
	assert.False(t, next.Keys.PageInfo.HasNextPage)

	for _, bad := range []string{
		`mutation { generateKeys(pool: "no spaces") { id } }`,
		`mutation { acquireKey(holder: "` + strings.Repeat("x", 129) + `") { token } }`,
		`query { keys(first: 1001) { nodes { id } } }`,
		`query { keys(first: 0) { nodes { id } } }`,
		`query { keys(first: -5) { nodes { id } } }`,
		`query { keys(after: "nope") { nodes { id } } }`,
		`query { stats(pool: "-") { total } }`,
	} {
		assert.Equal(t, []string{"BAD_USER_INPUT"}, e.post(t, bad, nil).codes(), bad)
	}
}

// TestKeysPricedByFirst: a page is priced by its size, so that no operation reads
// more than about 1,000 keys.
func TestKeysPricedByFirst(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	e.generate(t, 2)
	resp := e.post(t, `query { keys(first: 1000) { nodes { id status createdAt expiresAt pool } pageInfo { hasNextPage } } }`, nil)
	require.Empty(t, resp.Errors)
	resp = e.post(t, `query($n: Int) { a: keys(first: $n) { nodes { id } } b: keys(first: $n) { nodes { id } } }`, map[string]any{"n": 1000})
	assert.Equal(t, []string{"COMPLEXITY_LIMIT_EXCEEDED"}, resp.codes())
	resp = e.post(t, `query($n: Int) { a: keys(first: $n) { nodes { id } } b: keys(first: $n) { nodes { id } } }`, map[string]any{"n": 100})
	assert.Empty(t, resp.Errors)
}

// TestKeyEventsOfAPool: keyEvents follows one pool's stream, and shows the pool and
// the holder of each event.
func TestKeyEventsOfAPool(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	s := e.subscribeWS(t, "graphql-transport-ws", `subscription { keyEvents(pool: "p", types: [ACQUIRED]) { pool holder keyId } }`, nil)
	defer s.close()
	e.waitSubscribers(t, 1)
	e.mustPost(t, `mutation { generateKeys(count: 1) { id } }`, nil, nil)
	e.mustPost(t, `mutation { acquireKey { token } }`, nil, nil) // the default pool's: not followed
	e.mustPost(t, `mutation { generateKeys(count: 1, pool: "p") { id } }`, nil, nil)
	e.mustPost(t, `mutation { acquireKey(pool: "p", holder: "me") { token } }`, nil, nil)
	resp, done := s.next(t)
	require.False(t, done)
	var got struct {
		KeyEvents struct{ Pool, Holder, KeyID string }
	}
	resp.decode(t, &got)
	assert.Equal(t, "p", got.KeyEvents.Pool)
	assert.Equal(t, "me", got.KeyEvents.Holder)
}
