package graph_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/client"
	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

const keyFields = `id status createdAt expiresAt lease { token fence acquiredAt expiresAt } history { timesAcquired leasesExpired lastAcquiredAt }`

type leaseView struct {
	Token      string
	Fence      int64
	AcquiredAt string
	ExpiresAt  string
	Key        *keyView
}

type keyView struct {
	ID        string
	Status    string
	CreatedAt string
	ExpiresAt string
	Lease     *leaseView
	History   struct {
		TimesAcquired  int64
		LeasesExpired  int64
		LastAcquiredAt *string
	}
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(s, "Z"), "time %q is not UTC", s)
	return at
}

func (e *testEnv) key(t *testing.T, id string) *keyView {
	t.Helper()
	var out struct{ Key *keyView }
	e.mustPost(t, `query($id: ID!) { key(id: $id) { `+keyFields+` } }`, map[string]any{"id": id}, &out)
	return out.Key
}

func (e *testEnv) acquire(t *testing.T) leaseView {
	t.Helper()
	var out struct{ AcquireKey *leaseView }
	e.mustPost(t, `mutation { acquireKey { token fence acquiredAt expiresAt key { `+keyFields+` } } }`, nil, &out)
	require.NotNil(t, out.AcquireKey)
	return *out.AcquireKey
}

func requireCode(t *testing.T, resp response, code string) {
	t.Helper()
	require.Len(t, resp.Errors, 1, "errors: %+v", resp.Errors)
	require.Equal(t, code, resp.Errors[0].code(), "error: %+v", resp.Errors[0])
	require.NotEmpty(t, resp.Errors[0].Message)
}

func TestGenerateKeys(t *testing.T) {
	e := newEnv(t, keystore.Options{})

	t.Run("count defaults to 1", func(t *testing.T) {
		var out struct{ GenerateKeys []keyView }
		e.mustPost(t, `mutation { generateKeys { `+keyFields+` } }`, nil, &out)
		require.Len(t, out.GenerateKeys, 1)
		k := out.GenerateKeys[0]
		assert.Equal(t, "AVAILABLE", k.Status)
		assert.GreaterOrEqual(t, len(k.ID), 20)
		assert.Nil(t, k.Lease)
		assert.Zero(t, k.History.TimesAcquired)
		assert.Nil(t, k.History.LastAcquiredAt)
		created := parseTime(t, k.CreatedAt)
		assert.Equal(t, keystore.DefaultKeepAliveTTL, parseTime(t, k.ExpiresAt).Sub(created))
		assert.Equal(t, e.clock.Now().UTC(), created)
	})
	t.Run("many, all distinct", func(t *testing.T) {
		ids := e.generate(t, 50)
		require.Len(t, ids, 50)
		seen := map[string]bool{}
		for _, id := range ids {
			require.False(t, seen[id])
			seen[id] = true
		}
	})
	t.Run("counts out of range create nothing", func(t *testing.T) {
		before := e.stats(t)
		for _, count := range []int{0, -1, 100000000, keystore.DefaultMaxGenerate + 1} {
			resp := e.post(t, `mutation($n: Int!) { generateKeys(count: $n) { id } }`, map[string]any{"n": count})
			requireCode(t, resp, "BAD_USER_INPUT")
			assert.Equal(t, "null", string(resp.Data), "count %d", count)
		}
		assert.Equal(t, before, e.stats(t))
	})
}

func TestAcquireKey(t *testing.T) {
	e := newEnv(t, keystore.Options{})

	t.Run("none available is null with NOT_FOUND", func(t *testing.T) {
		resp := e.post(t, `mutation { acquireKey { token } }`, nil)
		requireCode(t, resp, "NOT_FOUND")
		assert.JSONEq(t, `{"acquireKey": null}`, string(resp.Data))
	})

	ids := e.generate(t, 2)
	first := e.acquire(t)
	t.Run("blocks a key under a new lease", func(t *testing.T) {
		require.NotNil(t, first.Key)
		assert.Contains(t, ids, first.Key.ID)
		assert.Equal(t, "BLOCKED", first.Key.Status)
		require.NotNil(t, first.Key.Lease)
		assert.Equal(t, first.Token, first.Key.Lease.Token)
		assert.Equal(t, keystore.DefaultLeaseTTL, parseTime(t, first.ExpiresAt).Sub(parseTime(t, first.AcquiredAt)))
		assert.Equal(t, int64(1), first.Key.History.TimesAcquired)
		require.NotNil(t, first.Key.History.LastAcquiredAt)
		assert.Equal(t, first.AcquiredAt, *first.Key.History.LastAcquiredAt)
		assert.Equal(t, stats{Total: 2, Available: 1, Blocked: 1}, e.stats(t))
	})
	t.Run("ttl sets the lease length and fences grow", func(t *testing.T) {
		var out struct{ AcquireKey leaseView }
		e.mustPost(t, `mutation { acquireKey(ttl: "1m30s") { fence acquiredAt expiresAt } }`, nil, &out)
		l := out.AcquireKey
		assert.Equal(t, 90*time.Second, parseTime(t, l.ExpiresAt).Sub(parseTime(t, l.AcquiredAt)))
		assert.Greater(t, l.Fence, first.Fence)
	})
	t.Run("bad durations are BAD_USER_INPUT", func(t *testing.T) {
		before := e.stats(t)
		for _, q := range []string{
			`mutation { acquireKey(ttl: "soon") { token } }`,
			`mutation { acquireKey(ttl: "500ms") { token } }`, // under the 1s minimum
			`mutation { acquireKey(ttl: "2h") { token } }`,    // over the max lease TTL
			`mutation { acquireKey(wait: "forever") { token } }`,
			`mutation { acquireKey(wait: "-1s") { token } }`,
			`mutation { acquireKey(wait: 5) { token } }`,
		} {
			resp := e.post(t, q, nil)
			require.Len(t, resp.Errors, 1, q)
			assert.Equal(t, "BAD_USER_INPUT", resp.Errors[0].code(), "%s: %+v", q, resp.Errors[0])
		}
		var vars struct{ AcquireKey *leaseView }
		resp := e.post(t, `mutation($ttl: Duration) { acquireKey(ttl: $ttl) { token } }`, map[string]any{"ttl": "1 minute"})
		require.NotEmpty(t, resp.Errors)
		assert.Contains(t, []string{"BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"}, resp.Errors[0].code())
		_ = vars
		assert.Equal(t, before, e.stats(t))
	})
	t.Run("wait is served when a key comes free", func(t *testing.T) {
		require.Equal(t, 0, e.stats(t).Available)
		got := make(chan response, 1)
		go func() {
			got <- e.post(t, `mutation { acquireKey(wait: "5s") { key { id } } }`, nil)
		}()
		e.waitWaiters(t, 1)
		e.mustPost(t, `mutation($id: ID!) { unblockKey(id: $id) { id } }`, map[string]any{"id": first.Key.ID}, nil)
		resp := <-got
		require.Empty(t, resp.Errors)
		assert.Contains(t, string(resp.Data), first.Key.ID)
	})
	t.Run("wait runs out with NOT_FOUND", func(t *testing.T) {
		got := make(chan response, 1)
		go func() { got <- e.post(t, `mutation { acquireKey(wait: "2s") { token } }`, nil) }()
		e.waitWaiters(t, 1)
		// The waiter's timer is set just after it queues: move the clock until it
		// fires, in steps far shorter than any lease.
		for {
			select {
			case resp := <-got:
				requireCode(t, resp, "NOT_FOUND")
				return
			case <-time.After(5 * time.Millisecond):
				e.clock.Advance(250 * time.Millisecond)
			}
		}
	})
}

func TestUnblockKey(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	ids := e.generate(t, 1)
	const unblock = `mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id status lease { token } } }`

	t.Run("unknown key is NOT_FOUND", func(t *testing.T) {
		for _, id := range []string{"no-such-key-000000000000", ""} {
			requireCode(t, e.post(t, unblock, map[string]any{"id": id}), "NOT_FOUND")
		}
	})
	t.Run("an AVAILABLE key is NOT_BLOCKED", func(t *testing.T) {
		requireCode(t, e.post(t, unblock, map[string]any{"id": ids[0]}), "NOT_BLOCKED")
		assert.Equal(t, "AVAILABLE", e.key(t, ids[0]).Status)
	})
	t.Run("without a token", func(t *testing.T) {
		e.acquire(t)
		var out struct{ UnblockKey keyView }
		e.mustPost(t, unblock, map[string]any{"id": ids[0]}, &out)
		assert.Equal(t, "AVAILABLE", out.UnblockKey.Status)
		assert.Nil(t, out.UnblockKey.Lease)
	})
	t.Run("with a wrong token nothing changes", func(t *testing.T) {
		lease := e.acquire(t)
		requireCode(t, e.post(t, unblock, map[string]any{"id": ids[0], "token": "not-the-token"}), "LEASE_MISMATCH")
		k := e.key(t, ids[0])
		assert.Equal(t, "BLOCKED", k.Status)
		assert.Equal(t, lease.Token, k.Lease.Token)

		var out struct{ UnblockKey keyView }
		e.mustPost(t, unblock, map[string]any{"id": ids[0], "token": lease.Token}, &out)
		assert.Equal(t, "AVAILABLE", out.UnblockKey.Status)
	})
	t.Run("an old lease's token does not unblock a new lease", func(t *testing.T) {
		old := e.acquire(t)
		e.clock.Advance(keystore.DefaultLeaseTTL) // the lease runs out
		current := e.acquire(t)
		require.NotEqual(t, old.Token, current.Token)
		requireCode(t, e.post(t, unblock, map[string]any{"id": ids[0], "token": old.Token}), "LEASE_MISMATCH")
	})
}

func TestRenewLease(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	e.generate(t, 1)
	lease := e.acquire(t)
	id := lease.Key.ID
	const renew = `mutation($id: ID!, $token: ID!, $ttl: Duration) { renewLease(id: $id, token: $token, ttl: $ttl) { token fence acquiredAt expiresAt key { id status } } }`

	t.Run("extends the lease from now", func(t *testing.T) {
		e.clock.Advance(30 * time.Second)
		var out struct{ RenewLease leaseView }
		e.mustPost(t, renew, map[string]any{"id": id, "token": lease.Token, "ttl": "2m"}, &out)
		r := out.RenewLease
		assert.Equal(t, lease.Token, r.Token)
		assert.Equal(t, lease.Fence, r.Fence)
		assert.Equal(t, lease.AcquiredAt, r.AcquiredAt)
		assert.Equal(t, e.clock.Now().Add(2*time.Minute).UTC(), parseTime(t, r.ExpiresAt))
		assert.Equal(t, "BLOCKED", r.Key.Status)
	})
	t.Run("ttl defaults to the lease TTL", func(t *testing.T) {
		var out struct{ RenewLease leaseView }
		e.mustPost(t, renew, map[string]any{"id": id, "token": lease.Token}, &out)
		assert.Equal(t, e.clock.Now().Add(keystore.DefaultLeaseTTL).UTC(), parseTime(t, out.RenewLease.ExpiresAt))
	})
	t.Run("errors", func(t *testing.T) {
		requireCode(t, e.post(t, renew, map[string]any{"id": id, "token": "wrong"}), "LEASE_MISMATCH")
		requireCode(t, e.post(t, renew, map[string]any{"id": id, "token": lease.Token, "ttl": "nope"}), "BAD_USER_INPUT")
		requireCode(t, e.post(t, renew, map[string]any{"id": "missing-key-00000000000", "token": lease.Token}), "NOT_FOUND")
		e.clock.Advance(keystore.DefaultLeaseTTL) // the lease runs out: never renewed
		requireCode(t, e.post(t, renew, map[string]any{"id": id, "token": lease.Token}), "NOT_BLOCKED")
	})
}

func TestLeaseRunsOut(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	e.generate(t, 1)
	lease := e.acquire(t)

	e.clock.Advance(keystore.DefaultLeaseTTL - time.Millisecond)
	assert.Equal(t, "BLOCKED", e.key(t, lease.Key.ID).Status, "never early")
	e.clock.Advance(time.Millisecond)
	k := e.key(t, lease.Key.ID)
	assert.Equal(t, "AVAILABLE", k.Status)
	assert.Nil(t, k.Lease)
	assert.Equal(t, int64(1), k.History.TimesAcquired)
	assert.Equal(t, int64(1), k.History.LeasesExpired)
	assert.Equal(t, stats{Total: 1, Available: 1}, e.stats(t))
}

func TestKeepAliveAndExpiry(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	id := e.generate(t, 1)[0]
	const keepAlive = `mutation($id: ID!) { keepAlive(id: $id) { id expiresAt lease { token } } }`

	e.clock.Advance(4 * time.Minute)
	lease := e.acquire(t)
	var out struct{ KeepAlive keyView }
	e.mustPost(t, keepAlive, map[string]any{"id": id}, &out)
	assert.Equal(t, e.clock.Now().Add(keystore.DefaultKeepAliveTTL).UTC(), parseTime(t, out.KeepAlive.ExpiresAt))
	require.NotNil(t, out.KeepAlive.Lease, "keepAlive leaves the lease alone")
	assert.Equal(t, lease.Token, out.KeepAlive.Lease.Token)

	e.clock.Advance(4 * time.Minute)
	require.NotNil(t, e.key(t, id), "kept alive")
	e.clock.Advance(time.Minute)
	assert.Nil(t, e.key(t, id), "expired")
	assert.Equal(t, stats{}, e.stats(t))
	requireCode(t, e.post(t, keepAlive, map[string]any{"id": id}), "NOT_FOUND")
	requireCode(t, e.post(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": id}), "NOT_FOUND")
}

func TestDeleteKey(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	ids := e.generate(t, 2)
	var out struct{ DeleteKey string }
	e.mustPost(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": ids[0]}, &out)
	assert.Equal(t, ids[0], out.DeleteKey)
	assert.Nil(t, e.key(t, ids[0]))
	assert.NotNil(t, e.key(t, ids[1]))
	assert.Equal(t, stats{Total: 1, Available: 1}, e.stats(t))
	for _, id := range []string{ids[0], "", "x"} {
		requireCode(t, e.post(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": id}), "NOT_FOUND")
	}
}

func TestKeyQuery(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	id := e.generate(t, 1)[0]
	for _, unknown := range []string{"", "x", "AAAAAAAAAAAAAAAAAAAAAA", strings.Repeat("z", 300)} {
		resp := e.post(t, `query($id: ID!) { key(id: $id) { id } }`, map[string]any{"id": unknown})
		require.Empty(t, resp.Errors, "id %q", unknown)
		assert.JSONEq(t, `{"key": null}`, string(resp.Data))
	}
	assert.Equal(t, id, e.key(t, id).ID)

	t.Run("gqlgen client and GET", func(t *testing.T) {
		c := client.New(e.srv.Config.Handler)
		var out struct{ Stats stats }
		c.MustPost(`{ stats { total available blocked } }`, &out)
		assert.Equal(t, stats{Total: 1, Available: 1}, out.Stats)

		res, err := http.Get(e.srv.URL + "?query=" + url.QueryEscape(`{ stats { total } }`))
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode)

		res, err = http.Get(e.srv.URL + "?query=" + url.QueryEscape(`mutation { generateKeys { id } }`))
		require.NoError(t, err)
		res.Body.Close()
		assert.GreaterOrEqual(t, res.StatusCode, 400, "GET is for queries only")
		assert.Less(t, res.StatusCode, 500)
		assert.Equal(t, stats{Total: 1, Available: 1}, e.stats(t))
	})
}

// brokenStore fails in the ways a remote store can, to check what clients see.
type brokenStore struct {
	keystore.Store
	err error
}

func (s brokenStore) Stats(context.Context, string) (keystore.Stats, error) {
	return keystore.Stats{}, s.err
}
func (s brokenStore) Get(context.Context, string) (keystore.Key, error) {
	panic("secret panic text")
}

func TestErrorsAreCodedAndInternalsHidden(t *testing.T) {
	t.Run("UNAVAILABLE", func(t *testing.T) {
		e := newEnvForStore(t, brokenStore{err: keystore.Errorf(keystore.EUNAVAILABLE, "the store cannot be reached")})
		requireCode(t, e.post(t, `{ stats { total } }`, nil), "UNAVAILABLE")
	})
	t.Run("unknown errors are INTERNAL_SERVER_ERROR", func(t *testing.T) {
		e := newEnvForStore(t, brokenStore{err: fmt.Errorf("dial 10.0.0.7: password=hunter2: %w", errors.New("boom"))})
		resp := e.post(t, `{ stats { total } }`, nil)
		requireCode(t, resp, "INTERNAL_SERVER_ERROR")
		assert.NotContains(t, resp.Errors[0].Message, "hunter2")
	})
	t.Run("coded internal errors hide their text too", func(t *testing.T) {
		e := newEnvForStore(t, brokenStore{err: &keystore.Error{Code: keystore.EINTERNAL, Message: "heap index 7 corrupt"}})
		resp := e.post(t, `{ stats { total } }`, nil)
		requireCode(t, resp, "INTERNAL_SERVER_ERROR")
		assert.NotContains(t, resp.Errors[0].Message, "heap")
	})
	t.Run("panics are INTERNAL_SERVER_ERROR", func(t *testing.T) {
		e := newEnvForStore(t, brokenStore{})
		resp := e.post(t, `{ key(id: "k") { id } }`, nil)
		requireCode(t, resp, "INTERNAL_SERVER_ERROR")
		assert.NotContains(t, resp.Errors[0].Message, "secret")
	})
	t.Run("gqlgen's own codes", func(t *testing.T) {
		e := newEnv(t, keystore.Options{})
		resp := e.post(t, `{ stats { total `, nil)
		requireCode(t, resp, "GRAPHQL_PARSE_FAILED")
		assert.Equal(t, http.StatusOK, resp.status, "application/json answers request errors with 200")
		resp = e.post(t, `{ stats { nope } }`, nil)
		requireCode(t, resp, "GRAPHQL_VALIDATION_FAILED")
	})
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	e.generate(t, 3)
	before := e.stats(t)

	t.Run("malformed JSON is 400", func(t *testing.T) {
		for _, body := range []string{`{bad`, `[]`, `{"query": 7}`, ``} {
			resp := e.postRaw(t, []byte(body))
			assert.GreaterOrEqual(t, resp.status, 400, "body %q", body)
			assert.Less(t, resp.status, 500, "body %q", body)
		}
	})
	t.Run("an 8 MiB body is 413", func(t *testing.T) {
		big := []byte(`{"query": "{ stats { total } }", "variables": {"pad": "` + strings.Repeat("x", 8<<20) + `"}}`)
		res, err := http.Post(e.srv.URL, "application/json", bytes.NewReader(big))
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)

		// Without a Content-Length too.
		req, err := http.NewRequest(http.MethodPost, e.srv.URL, struct{ *bytes.Reader }{bytes.NewReader(big)})
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		res, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	})
	t.Run("alias floods are refused", func(t *testing.T) {
		for _, field := range []string{"generateKeys { id }", "acquireKey { token }"} {
			var q strings.Builder
			q.WriteString("mutation {")
			for i := range 300 {
				fmt.Fprintf(&q, " a%d: %s", i, field)
			}
			q.WriteString(" }")
			resp := e.post(t, q.String(), nil)
			requireCode(t, resp, "COMPLEXITY_LIMIT_EXCEEDED")
		}
		var q strings.Builder
		q.WriteString("{")
		for i := range 300 {
			fmt.Fprintf(&q, " a%d: stats { total available blocked }", i)
		}
		q.WriteString(" }")
		requireCode(t, e.post(t, q.String(), nil), "COMPLEXITY_LIMIT_EXCEEDED")
	})
	t.Run("the pool is unchanged and the server still serves", func(t *testing.T) {
		assert.Equal(t, before, e.stats(t))
	})
}

func TestIntrospectionFitsTheComplexityLimit(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	resp := e.post(t, introspectionQuery, nil)
	require.Empty(t, resp.Errors)
	assert.Contains(t, string(resp.Data), `"KeyEventType"`)
	assert.Contains(t, string(resp.Data), "keep-alive deadline", "descriptions are served")

	// A realistic deep query fits too.
	e.generate(t, 1)
	e.mustPost(t, `mutation { acquireKey(ttl: "10s") { token fence acquiredAt expiresAt key { `+keyFields+` } } }`, nil, nil)
	e.mustPost(t, `{ stats { total available blocked } k: key(id: "x") { `+keyFields+` } }`, nil, nil)
}

func TestAutomaticPersistedQueries(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	const query = `{ stats { total } }`
	const hash = "0c6b1c9d5b5f1f5b0b9bbd7a0d8bb8fea0a44ea22e4b3a1d62f0f7b1f5ee83f9" // not the query's
	ext := func(h string) map[string]any {
		return map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": h}}
	}
	post := func(body map[string]any) response {
		b, err := jsonMarshal(body)
		require.NoError(t, err)
		return e.postRaw(t, b)
	}
	sum := sha256Hex(query)
	resp := post(map[string]any{"extensions": ext(sum)})
	require.NotEmpty(t, resp.Errors)
	assert.Equal(t, "PERSISTED_QUERY_NOT_FOUND", resp.Errors[0].code())
	resp = post(map[string]any{"query": query, "extensions": ext(sum)})
	require.Empty(t, resp.Errors)
	resp = post(map[string]any{"extensions": ext(sum)})
	require.Empty(t, resp.Errors)
	assert.JSONEq(t, `{"stats": {"total": 0}}`, string(resp.Data))
	resp = post(map[string]any{"query": query, "extensions": ext(hash)})
	require.NotEmpty(t, resp.Errors, "a hash that does not match its query is refused")
}

func TestWebsocketOrigin(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	dial := func(srvURL string, header http.Header) (*websocket.Conn, *http.Response, error) {
		return dialWebsocket(srvURL, "graphql-transport-ws", header)
	}

	_, res, err := dial(e.srv.URL, http.Header{"Origin": {"http://evil.example"}})
	require.Error(t, err)
	require.NotNil(t, res)
	assert.Equal(t, http.StatusForbidden, res.StatusCode)

	conn, _, err := dial(e.srv.URL, http.Header{"Origin": {e.srv.URL}})
	require.NoError(t, err)
	conn.CloseNow()

	t.Run("a wider check can be configured", func(t *testing.T) {
		store, err := keystore.NewMemory(e.clock, keystore.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = store.Close() })
		srv := httptestServer(t, graph.NewServer(store, graph.ServerOptions{
			Logger:      testLogger(t),
			CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "http://trusted.example" },
		}))
		for _, origin := range []string{"http://trusted.example", srv.URL} {
			conn, _, err := dial(srv.URL, http.Header{"Origin": {origin}})
			require.NoError(t, err, origin)
			conn.CloseNow()
		}
		_, res, err := dial(srv.URL, http.Header{"Origin": {"http://evil.example"}})
		require.Error(t, err)
		assert.Equal(t, http.StatusForbidden, res.StatusCode)
	})
}
