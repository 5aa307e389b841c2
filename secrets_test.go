package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// importedSecret is a vendor's key given to importKeys: the tests grep every output of
// the server for it.
const importedSecret = "sk-live-IMPORTED-9f8e7d6c5b4a39281706"

// TestImportedSecretNotLeaked runs the real server at the debug log level, imports a
// secret (in variables and written into a query), and uses the key every way there is
// (acquire, renew, cool-down, quarantine, restore, a refused duplicate, listings, REST,
// events, /metrics). The secret must be in the holder's answers (acquire, renew) and in
// nothing else: no log line, no event, no metric, no key or keys answer, no error. So
// on either store (keystore/redisstore's tests grep what Redis holds and sees).
func TestImportedSecretNotLeaked(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testImportedSecretNotLeaked(t) })
	t.Run("redis", func(t *testing.T) {
		sock := startPasswordRedis(t, storeSecret)
		key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
		testImportedSecretNotLeaked(t, "-store", "unix://:"+storeSecret+"@"+sock+"?db=0", "-secrets-key", key)
	})
}

func testImportedSecretNotLeaked(t *testing.T, store ...string) {
	s := startServer(t, append([]string{"-log-level", "debug", "-quarantine-after", "2", "-expired-lease-cooldown", "1s"}, store...)...)
	events := s.subscribe(t, `subscription { keyEvents(pool: "vendor") { seq stream type keyId pool at holder } }`)
	var leaked []string // what must not hold the secret
	keep := func(what string, b []byte) { leaked = append(leaked, what+": "+string(b)) }
	post := func(query string, vars map[string]any) gqlResponse {
		t.Helper()
		_, resp := s.post(t, query, vars)
		return resp
	}

	var made struct {
		ImportKeys []struct{ ID string }
	}
	resp := post(`mutation($keys: [KeyInput!]!) { importKeys(pool: "vendor", keys: $keys) { id name status expiresAt lease { secret } } }`,
		map[string]any{"keys": []map[string]any{{"secret": importedSecret, "name": "team A"}}})
	require.Empty(t, resp.Errors)
	require.NoError(t, json.Unmarshal(resp.Data, &made))
	keep("importKeys answer", resp.Data)
	id := made.ImportKeys[0].ID

	// A duplicate, written into the query's text: refused, naming no secret.
	resp = post(`mutation { importKeys(pool: "vendor", keys: [{secret: "`+importedSecret+`"}]) { id } }`, nil)
	require.Len(t, resp.Errors, 1)
	assert.Equal(t, "ALREADY_EXISTS", resp.Errors[0].Extensions["code"])
	assert.EqualValues(t, 0, resp.Errors[0].Extensions["index"])
	errJSON, _ := json.Marshal(resp.Errors)
	keep("duplicate's error", errJSON)

	// The holder's answers carry it.
	var acquired struct {
		AcquireKey struct {
			Token  string
			Secret string
		}
	}
	resp = post(`mutation { acquireKey(pool: "vendor", holder: "ci") { token secret key { id } } }`, nil)
	require.Empty(t, resp.Errors)
	require.NoError(t, json.Unmarshal(resp.Data, &acquired))
	assert.Equal(t, importedSecret, acquired.AcquireKey.Secret, "the acquire answer carries the secret")
	var renewed struct{ RenewLease struct{ Secret string } }
	resp = post(`mutation($id: ID!, $token: ID!) { renewLease(id: $id, token: $token) { secret } }`, map[string]any{"id": id, "token": acquired.AcquireKey.Token})
	require.Empty(t, resp.Errors)
	require.NoError(t, json.Unmarshal(resp.Data, &renewed))
	assert.Equal(t, importedSecret, renewed.RenewLease.Secret, "the renew answer carries the secret")

	// Every other read of the key, while it is leased and after.
	keyQuery := `query($id: ID!) { key(id: $id) { id name status coolingUntil lease { token secret holder } history { failures consecutiveFailures } } }`
	keep("key, leased", post(keyQuery, map[string]any{"id": id}).Data)
	keep("keys, leased", post(`{ keys(pool: "vendor") { nodes { id name lease { secret } } } }`, nil).Data)
	for _, path := range []string{"/v1/keys/" + id, "/v1/keys?pool=vendor", "/v1/stats?pool=vendor", "/v1/pools"} {
		keep("REST GET "+path, get(t, s.url+path))
	}
	resp = post(`mutation($id: ID!, $token: ID!) { unblockKey(id: $id, token: $token, cooldown: "1m", failed: true) { id status lease { secret } } }`,
		map[string]any{"id": id, "token": acquired.AcquireKey.Token})
	require.Empty(t, resp.Errors)
	keep("unblockKey answer", resp.Data)
	keep("key, cooling", post(keyQuery, map[string]any{"id": id}).Data)
	keep("restoreKey answer", post(`mutation($id: ID!) { restoreKey(id: $id) { id status } }`, map[string]any{"id": id}).Data)
	keep("keys, restored", post(`{ keys(pool: "vendor", status: AVAILABLE) { nodes { id name lease { secret } } } }`, nil).Data)
	keep("/metrics", get(t, s.url+"/metrics"))

	// REST's acquire carries it too; then the key goes.
	res, err := http.Post(s.url+"/v1/keys/acquire?pool=vendor", "application/json", nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Contains(t, string(body), importedSecret, "REST's acquire answer carries the secret")
	resp = post(`mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": id})
	require.Empty(t, resp.Errors)

	// Every event of the key, to its DELETED.
	for {
		msg := readWS(t, events)
		keep("event", msg.Payload)
		if strings.Contains(string(msg.Payload), `"DELETED"`) {
			break
		}
	}
	require.NoError(t, s.stop(t))
	keep("log", []byte(s.logs.String()))
	keep("stdout", []byte(s.out.String()))
	assert.Contains(t, s.logs.String(), "http request", "the debug log has a line per request")
	for _, out := range leaked {
		assert.NotContains(t, out, importedSecret)
		assert.NotContains(t, out, importedSecret[8:]) // nor most of it
	}
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, url)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return body
}
