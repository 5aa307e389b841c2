package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/rest/resttest"
)

// restClient checks each of its exchanges with /v1 and the operations routes against
// the REST routes' OpenAPI document: one that the document does not describe fails.
var restClient = &http.Client{Transport: resttest.Transport(nil)}

// rest calls a /v1 route and decodes its JSON answer into v (if not nil).
func (s *server) rest(t *testing.T, method, path, body string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := restClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	if v != nil {
		require.NoError(t, json.Unmarshal(data, v), "body %s", data)
	}
	return res.StatusCode
}

func (s *server) get(t *testing.T, path string) (int, string) {
	t.Helper()
	res, err := restClient.Get(s.url + path)
	require.NoError(t, err)
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(data)
}

// TestRESTAndGraphQLAgree drives one pool through both transports: what one does, the
// other sees, field for field.
func TestRESTAndGraphQLAgree(t *testing.T) {
	s := startServer(t)
	var generated struct{ Keys []struct{ ID string } }
	require.Equal(t, 201, s.rest(t, "POST", "/v1/keys", `{"count":2}`, &generated))
	require.Len(t, generated.Keys, 2)

	type lease struct {
		Token      string
		Fence      int64
		ExpiresAt  time.Time
		AcquiredAt time.Time
	}
	var acquired struct {
		lease
		Key struct {
			ID        string
			Status    string
			ExpiresAt time.Time
		}
	}
	require.Equal(t, 200, s.rest(t, "POST", "/v1/keys/acquire", "", &acquired))
	id := acquired.Key.ID

	var viaGraphQL struct {
		Key struct {
			Status    string
			ExpiresAt time.Time
			Lease     struct {
				Token     string
				Fence     int64
				ExpiresAt time.Time
			}
		}
	}
	s.mustPost(t, `query($id: ID!) { key(id: $id) { status expiresAt lease { token fence expiresAt } } }`, map[string]any{"id": id}, &viaGraphQL)
	assert.Equal(t, "BLOCKED", viaGraphQL.Key.Status)
	assert.Equal(t, acquired.Token, viaGraphQL.Key.Lease.Token)
	assert.Equal(t, acquired.Fence, viaGraphQL.Key.Lease.Fence)
	assert.True(t, acquired.ExpiresAt.Equal(viaGraphQL.Key.Lease.ExpiresAt))
	assert.True(t, acquired.Key.ExpiresAt.Equal(viaGraphQL.Key.ExpiresAt))
	assert.JSONEq(t, `{"total":2,"available":1,"blocked":1}`, s.stats(t))
	_, restStats := s.get(t, "/v1/stats")
	var viaGraphQLStats struct{ Stats json.RawMessage }
	s.mustPost(t, `{ stats { total available blocked cooling quarantined waiting } }`, nil, &viaGraphQLStats)
	assert.JSONEq(t, string(viaGraphQLStats.Stats), restStats)

	// Unblock over GraphQL with the REST lease's token; REST sees it AVAILABLE.
	s.mustPost(t, `mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { status } }`,
		map[string]any{"id": id, "token": acquired.Token}, nil)
	var key struct {
		Status string
		Lease  *lease
	}
	require.Equal(t, 200, s.rest(t, "GET", "/v1/keys/"+id, "", &key))
	assert.Equal(t, "AVAILABLE", key.Status)
	assert.Nil(t, key.Lease)

	// Delete over REST; GraphQL sees nothing.
	require.Equal(t, 204, s.rest(t, "DELETE", "/v1/keys/"+id, "", nil))
	var gone struct{ Key *struct{ ID string } }
	s.mustPost(t, `query($id: ID!) { key(id: $id) { id } }`, map[string]any{"id": id}, &gone)
	assert.Nil(t, gone.Key)
	var e struct{ Error struct{ Code string } }
	assert.Equal(t, 404, s.rest(t, "POST", "/v1/keys/"+id+"/keepalive", "", &e))
	assert.Equal(t, "NOT_FOUND", e.Error.Code)
}

var sample = regexp.MustCompile(`(?m)^(keypool_\w+)(\{[^}]*\})? (\S+)$`)

// metricValues reads the keypool_ samples of /metrics as "name{labels}" → value.
func metricValues(t *testing.T, s *server) map[string]float64 {
	t.Helper()
	status, text := s.get(t, "/metrics")
	require.Equal(t, 200, status)
	values := make(map[string]float64)
	for _, m := range sample.FindAllStringSubmatch(text, -1) {
		v, err := strconv.ParseFloat(m[3], 64)
		require.NoError(t, err)
		values[m[1]+m[2]] = v
	}
	return values
}

func TestOperationsEndpoints(t *testing.T) {
	s := startServer(t, "-lease-ttl", "1s")
	status, body := s.get(t, "/healthz")
	assert.Equal(t, 200, status)
	assert.Equal(t, "ok\n", body)
	status, body = s.get(t, "/readyz")
	assert.Equal(t, 200, status)
	assert.Equal(t, "ok\n", body)

	before := metricValues(t, s)
	assert.Contains(t, before, `keypool_operations_total{op="acquire",outcome="NOT_FOUND"}`, "possible outcomes start at zero")
	for _, impossible := range []string{
		`keypool_operations_total{op="acquire",outcome="SLOW_CONSUMER"}`,
		`keypool_operations_total{op="delete",outcome="LEASE_MISMATCH"}`,
		`keypool_operations_total{op="stats",outcome="NOT_FOUND"}`,
		`keypool_operations_total{op="subscribe",outcome="SLOW_CONSUMER"}`,
	} {
		assert.NotContains(t, before, impossible, "a series no operation can produce")
	}
	require.Equal(t, 201, s.rest(t, "POST", "/v1/keys", `{"count":3}`, nil))
	require.Equal(t, 200, s.rest(t, "POST", "/v1/keys/acquire", "", nil))
	require.Equal(t, 404, s.rest(t, "GET", "/v1/keys/nope", "", nil))
	require.Equal(t, 400, s.rest(t, "POST", "/v1/keys", `{"count":0}`, nil))
	var lease struct{ AcquireKey struct{ Token string } }
	s.mustPost(t, `mutation { acquireKey { token } }`, nil, &lease)

	after := metricValues(t, s)
	for series, delta := range map[string]float64{
		`keypool_operations_total{op="generate",outcome="ok"}`:                     1,
		`keypool_operations_total{op="generate",outcome="BAD_USER_INPUT"}`:         1,
		`keypool_operations_total{op="acquire",outcome="ok"}`:                      2,
		`keypool_operations_total{op="get",outcome="NOT_FOUND"}`:                   1,
		`keypool_request_duration_seconds_count{op="acquire",transport="rest"}`:    1,
		`keypool_request_duration_seconds_count{op="acquire",transport="graphql"}`: 1,
	} {
		assert.Equal(t, delta, after[series]-before[series], series)
	}
	assert.Equal(t, 1.0, after[`keypool_keys{pool="default",state="AVAILABLE"}`])
	assert.Equal(t, 2.0, after[`keypool_keys{pool="default",state="BLOCKED"}`])

	// The 1s leases run out on the real clock: released by expiry, lateness observed.
	require.Eventually(t, func() bool {
		return metricValues(t, s)["keypool_leases_expired_total"] == 2
	}, 10*time.Second, 50*time.Millisecond)
	assert.Equal(t, 2.0, metricValues(t, s)[`keypool_expiry_lateness_seconds_count{event="RELEASED"}`])
}

func TestCORSOrigins(t *testing.T) {
	s := startServer(t, "-cors-origins", "https://app.example.com")
	preflight := func(path, origin string) *http.Response {
		req, err := http.NewRequest("OPTIONS", s.url+path, nil)
		require.NoError(t, err)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res
	}
	for _, path := range []string{"/graphql", "/v1/keys/acquire"} {
		res := preflight(path, "https://app.example.com")
		assert.Equal(t, 204, res.StatusCode, path)
		assert.Equal(t, "https://app.example.com", res.Header.Get("Access-Control-Allow-Origin"), path)
		assert.Contains(t, res.Header.Get("Access-Control-Allow-Methods"), "POST", path)
		assert.Equal(t, "content-type", res.Header.Get("Access-Control-Allow-Headers"), path)
		assert.Empty(t, preflight(path, "https://evil.example.com").Header.Get("Access-Control-Allow-Origin"), path)
	}
	req, _ := http.NewRequest("GET", s.url+"/v1/stats", nil)
	req.Header.Set("Origin", "https://app.example.com")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, "https://app.example.com", res.Header.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, res.Header.Values("Vary"), "Origin")

	dial := func(origin string) (int, error) {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, res, err := dialWebsocket(context.Background(), "ws"+strings.TrimPrefix(s.url, "http")+"/graphql",
			websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}, HTTPHeader: h})
		if conn != nil {
			conn.CloseNow()
		}
		if res == nil {
			return 0, err
		}
		return res.StatusCode, err
	}
	for origin, want := range map[string]int{
		"":                         http.StatusSwitchingProtocols,
		s.url:                      http.StatusSwitchingProtocols, // same origin
		"https://app.example.com":  http.StatusSwitchingProtocols,
		"https://evil.example.com": http.StatusForbidden,
	} {
		status, _ := dial(origin)
		assert.Equal(t, want, status, "websocket from %q", origin)
	}
}

func TestConfigCORSOrigins(t *testing.T) {
	cfg, err := parseConfig(nil, envOf(map[string]string{"KEYPOOL_CORS_ORIGINS": "https://a.example, http://localhost:3000"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "https://a.example,http://localhost:3000", cfg.CORSOrigins.String())
	cfg, err = parseConfig([]string{"-cors-origins", "*"}, envOf(map[string]string{"KEYPOOL_CORS_ORIGINS": "https://a.example"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "*", cfg.CORSOrigins.String())
	_, err = parseConfig([]string{"-cors-origins", "a.example"}, envOf(nil), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-cors-origins")
	assert.NotContains(t, err.Error(), "\n")
	_, err = parseConfig(nil, envOf(map[string]string{"KEYPOOL_CORS_ORIGINS": "ftp://x"}), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-cors-origins")
}

// TestGracefulShutdown stops the server while a REST request waits for a key and a
// subscription is open: the waiting request is answered UNAVAILABLE at once (not at
// the end of its wait or of the grace period), the subscription ends cleanly, and run
// returns nil.
func TestGracefulShutdown(t *testing.T) {
	s := startServer(t)
	conn := s.subscribe(t, `subscription { keyEvents { seq type keyId } }`)

	type answer struct {
		status int
		code   string
		err    error
	}
	inFlight := make(chan answer, 1)
	go func() {
		res, err := restClient.Post(s.url+"/v1/keys/acquire?wait=30s", "application/json", nil)
		if err != nil {
			inFlight <- answer{err: err}
			return
		}
		defer res.Body.Close()
		var e struct{ Error struct{ Code string } }
		err = json.NewDecoder(res.Body).Decode(&e)
		inFlight <- answer{status: res.StatusCode, code: e.Error.Code, err: err}
	}()
	// The acquire is waiting once the waiters gauge says so.
	require.Eventually(t, func() bool { return metricValues(t, s)["keypool_acquire_waiters"] == 1 },
		5*time.Second, 10*time.Millisecond)

	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			if _, _, err := conn.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()
	start := time.Now()
	require.NoError(t, s.stop(t), "run returns nil")
	assert.Less(t, time.Since(start), 3*time.Second, "shutdown waited for the waiting acquire")
	a := <-inFlight
	require.NoError(t, a.err, "the in-flight request was cut")
	assert.Equal(t, http.StatusServiceUnavailable, a.status, "the waiting acquire is told the server is going")
	assert.Equal(t, "UNAVAILABLE", a.code)
	err := <-closed
	assert.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err), "subscription closed cleanly: %v", err)
}

// TestMaxWaiters: with -max-waiters acquires waiting, one more that would wait is
// answered at once, over GraphQL with TOO_MANY_WAITERS and over REST with 429 in the
// error shape the OpenAPI document gives (restClient checks it), and the pool is as
// it was; the waiters are still served.
func TestMaxWaiters(t *testing.T) {
	const bound = 2
	s := startServer(t, "-max-waiters", strconv.Itoa(bound))
	type answer struct {
		resp gqlResponse
		err  error
	}
	waiting := make(chan answer, bound)
	for range bound {
		go func() {
			body := `{"query":"mutation { acquireKey(wait: \"30s\") { key { id } } }"}`
			res, err := http.Post(s.url+"/graphql", "application/json", strings.NewReader(body))
			if err != nil {
				waiting <- answer{err: err}
				return
			}
			defer res.Body.Close()
			var a answer
			a.err = json.NewDecoder(res.Body).Decode(&a.resp)
			waiting <- a
		}()
	}
	require.Eventually(t, func() bool { return metricValues(t, s)["keypool_acquire_waiters"] == bound },
		10*time.Second, 10*time.Millisecond)
	before := s.stats(t)

	// The refusals come at once, long before their 10s wait would run out.
	start := time.Now()
	status, resp := s.post(t, `mutation { acquireKey(wait: "10s") { key { id } } }`, nil)
	require.Equal(t, http.StatusOK, status)
	require.Len(t, resp.Errors, 1, "%s", resp.Data)
	assert.Equal(t, "TOO_MANY_WAITERS", resp.Errors[0].Extensions["code"])
	assert.JSONEq(t, `{"acquireKey":null}`, string(resp.Data))

	var e struct {
		Error struct{ Code, Message string }
	}
	require.Equal(t, http.StatusTooManyRequests, s.rest(t, "POST", "/v1/keys/acquire?wait=10s", "", &e))
	assert.Equal(t, "TOO_MANY_WAITERS", e.Error.Code)
	assert.NotEmpty(t, e.Error.Message)
	assert.Less(t, time.Since(start), 5*time.Second, "the refused acquires waited")
	assert.Equal(t, before, s.stats(t), "a refused acquire changed the pool")
	assert.EqualValues(t, bound, metricValues(t, s)["keypool_acquire_waiters"])

	// An acquire that does not wait is answered as ever.
	require.Equal(t, http.StatusNotFound, s.rest(t, "POST", "/v1/keys/acquire", "", &e))
	assert.Equal(t, "NOT_FOUND", e.Error.Code)

	s.mustPost(t, `mutation { generateKeys(count: 2) { id } }`, nil, nil)
	for range bound {
		a := <-waiting
		require.NoError(t, a.err)
		require.Empty(t, a.resp.Errors, "a waiter within the bound is served")
	}
}

func TestConfigLogLevel(t *testing.T) {
	cfg, err := parseConfig(nil, envOf(map[string]string{"KEYPOOL_LOG_LEVEL": "debug"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, slog.LevelDebug, cfg.LogLevel)
	cfg, err = parseConfig([]string{"-log-level", "warn"}, envOf(map[string]string{"KEYPOOL_LOG_LEVEL": "debug"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, slog.LevelWarn, cfg.LogLevel)
	_, err = parseConfig([]string{"-log-level", "loud"}, envOf(nil), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-log-level")
}

// TestRequestLog checks that -log-level debug logs one line per request, with the key
// id cut short.
func TestRequestLog(t *testing.T) {
	s := startServer(t, "-log-level", "debug", "-log-format", "json")

	// A websocket works through the logging middleware (it must pass Hijack on). after: 0
	// replays from the first event, so the one below is not missed while it starts.
	conn := s.subscribe(t, `subscription { keyEvents(after: 0) { seq type keyId } }`)
	var generated struct{ Keys []struct{ ID string } }
	require.Equal(t, 201, s.rest(t, "POST", "/v1/keys", "", &generated))
	id := generated.Keys[0].ID
	assert.Equal(t, "GENERATED", readEvent(t, conn).Type)
	require.Equal(t, 200, s.rest(t, "POST", "/v1/keys/"+id+"/keepalive", "", nil))
	go func() { // answer the server's close, as a browser does
		for {
			if _, _, err := conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	require.NoError(t, s.stop(t))

	text := s.logs.String()
	assert.NotContains(t, text, id, "a key id is logged whole")
	var sawRequest, sawUpgrade, sawStop bool
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		var entry map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &entry), line)
		if entry["msg"] == "http request" && entry["path"] == "/v1/keys/"+id[:6]+"…/keepalive" {
			sawRequest = true
			assert.Equal(t, "DEBUG", entry["level"])
			assert.Equal(t, "POST", entry["method"])
			assert.Equal(t, 200.0, entry["status"])
			assert.NotZero(t, entry["bytes"])
			assert.Contains(t, entry, "duration")
		}
		if entry["msg"] == "http request" && entry["path"] == "/graphql" && entry["status"] == 101.0 {
			sawUpgrade = true
		}
		if entry["msg"] == "stopped" {
			sawStop = true
		}
	}
	assert.True(t, sawRequest, "no request line for keepalive in %s", text)
	assert.True(t, sawUpgrade, "no line for the websocket")
	assert.True(t, sawStop, "no shutdown line")
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
