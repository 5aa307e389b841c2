package graph_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestComplexityFollowsVariables: an operation's complexity follows its variables,
// so the same document with a larger count is judged again, and a refused one stays
// refused (the second time from the query cache).
func TestComplexityFollowsVariables(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	const query = `mutation($n: Int!) {
		a: generateKeys(count: $n) { id status createdAt expiresAt }
		b: generateKeys(count: $n) { id status createdAt expiresAt }
	}`
	for range 2 {
		resp := e.post(t, query, map[string]any{"n": 1})
		require.Empty(t, resp.Errors)
		resp = e.post(t, query, map[string]any{"n": 10000})
		assert.Equal(t, []string{"COMPLEXITY_LIMIT_EXCEEDED"}, resp.codes(), "the count changes the complexity")
	}
	assert.Equal(t, 4, e.stats(t).Total, "no refused operation ran")
}

// TestOneWaitPerOperation: mutation fields run one after another, so an operation may
// wait for a key at most once (for at most 30 s); a second acquire that may wait is
// refused before anything runs, whether its wait is written out or a variable, and
// acquires that do not wait are not limited by it.
func TestOneWaitPerOperation(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	ids := e.generate(t, 1)
	const two = `mutation($w: Duration) { a: acquireKey(wait: $w) { token } b: acquireKey(wait: $w) { token } }`
	for range 2 { // the second time from the query cache
		resp := e.post(t, two, map[string]any{"w": "0s"})
		assert.Equal(t, []string{"NOT_FOUND"}, resp.codes(), "no waits: both run, the second finds no key")
		e.mustPost(t, `mutation($id: ID!) { unblockKey(id: $id) { id } }`, map[string]any{"id": ids[0]}, nil)
		resp = e.post(t, two, map[string]any{"w": "1s"})
		assert.Equal(t, []string{"COMPLEXITY_LIMIT_EXCEEDED"}, resp.codes(), "two waits")
		assert.Equal(t, 1, e.stats(t).Available, "nothing ran")
	}
	resp := e.post(t, `mutation { a: acquireKey(wait: "1s") { token } b: acquireKey { token } }`, nil)
	assert.Equal(t, []string{"NOT_FOUND"}, resp.codes(), "one wait and an acquire that does not wait")
	resp = e.post(t, `mutation { a: acquireKey(wait: "30s") { token } b: acquireKey(wait: "1s") { token } }`, nil)
	assert.Equal(t, []string{"COMPLEXITY_LIMIT_EXCEEDED"}, resp.codes())
}
