package graph_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/keystore"
)

// TestComplexityRemembered: an operation's complexity is remembered per document,
// operation and Int variables, so the same document with a larger count is judged
// again, and a refused one stays refused.
func TestComplexityRemembered(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	const query = `mutation($n: Int!) { generateKeys(count: $n) { id status createdAt expiresAt } }`
	for range 2 {
		resp := e.post(t, query, map[string]any{"n": 1})
		require.Empty(t, resp.Errors)
		resp = e.post(t, query, map[string]any{"n": 10000})
		assert.Equal(t, []string{"COMPLEXITY_LIMIT_EXCEEDED"}, resp.codes(), "the count changes the complexity")
	}
	assert.Equal(t, 2, e.stats(t).Total, "no refused operation ran")
}
