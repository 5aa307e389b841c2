package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// server is a keypool started by run, as main would.
type server struct {
	url    string        // http://127.0.0.1:PORT
	out    *lockedBuffer // what run wrote to stdout
	logs   *lockedBuffer // and to stderr: the log
	cancel context.CancelFunc
	done   chan error
}

// startServer runs the server on a free loopback port with args, as main would, and
// returns once it accepts connections. Its output and log are kept, and shown if the
// test fails; the server stops when the test ends.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{out: &lockedBuffer{}, logs: &lockedBuffer{}, cancel: cancel, done: make(chan error, 1)}
	addr := make(chan net.Addr, 1)
	go func() {
		s.done <- run(ctx, append([]string{"keypool", "-addr", "127.0.0.1:0"}, args...),
			func(string) string { return "" }, s.out, s.logs, func(a net.Addr) { addr <- a })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-s.done:
			assert.NoError(t, err, "run")
		case <-time.After(15 * time.Second):
			t.Error("run did not return")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs.String())
		}
	})
	select {
	case a := <-addr:
		s.url = "http://" + a.String()
	case err := <-s.done:
		t.Fatalf("the server stopped at start: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not start")
	}
	return s
}

// stop cancels run's context, as SIGTERM does, and returns run's error.
func (s *server) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after its context ended")
		return nil
	}
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

func (s *server) post(t *testing.T, query string, vars map[string]any) (int, gqlResponse) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	require.NoError(t, err)
	return s.postBody(t, body)
}

func (s *server) postBody(t *testing.T, body []byte) (int, gqlResponse) {
	t.Helper()
	res, err := http.Post(s.url+"/graphql", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer res.Body.Close()
	var resp gqlResponse
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.NewDecoder(res.Body).Decode(&resp))
	}
	return res.StatusCode, resp
}

func (s *server) mustPost(t *testing.T, query string, vars map[string]any, v any) {
	t.Helper()
	status, resp := s.post(t, query, vars)
	require.Equal(t, http.StatusOK, status)
	require.Empty(t, resp.Errors)
	if v != nil {
		require.NoError(t, json.Unmarshal(resp.Data, v))
	}
}

func (s *server) stats(t *testing.T) string {
	t.Helper()
	var out struct{ Stats json.RawMessage }
	s.mustPost(t, `{ stats { total available blocked } }`, nil, &out)
	return string(out.Stats)
}

// dialWebsocket opens a websocket to url as every test's client does: on a connection
// of its own (websocketClient(nil) unless opts has a client), closed if the handshake
// is refused, and with no limit on the size of a message read. ctx bounds the
// handshake only. A refused handshake's response carries the first 1024 bytes of its
// body; a successful one's has none to close.
func dialWebsocket(ctx context.Context, url string, opts websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = websocketClient(nil)
	}
	conn, res, err := websocket.Dial(ctx, url, &opts)
	if err != nil {
		return nil, res, err
	}
	conn.SetReadLimit(-1) // the library's default is 32 KiB
	return conn, res, nil
}

// websocketClient makes the HTTP client of one websocket handshake: a fresh connection
// (through dial, if not nil) that is closed, not kept, when the handshake is refused.
func websocketClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, DisableCompression: true}}
}

// subscribe opens a graphql-transport-ws subscription.
func (s *server) subscribe(t *testing.T, query string) *websocket.Conn {
	t.Helper()
	conn, _, err := dialWebsocket(context.Background(), "ws"+strings.TrimPrefix(s.url, "http")+"/graphql",
		websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.CloseNow() })
	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"type": "connection_init"}))
	require.Equal(t, "connection_ack", readWS(t, conn).Type)
	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": query}}))
	return conn
}

type wsMessage struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func readWS(t *testing.T, conn *websocket.Conn) wsMessage {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var msg wsMessage
		err := wsjson.Read(ctx, conn, &msg)
		cancel()
		require.NoError(t, err)
		if msg.Type == "ping" {
			require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"type": "pong"}))
			continue
		}
		return msg
	}
}

type event struct {
	Seq   int64
	Type  string
	KeyID string
}

func readEvent(t *testing.T, conn *websocket.Conn) event {
	t.Helper()
	msg := readWS(t, conn)
	require.Equal(t, "next", msg.Type, "payload %s", msg.Payload)
	var p struct {
		Data struct{ KeyEvents event }
	}
	require.NoError(t, json.Unmarshal(msg.Payload, &p))
	return p.Data.KeyEvents
}

// TestEndToEnd runs the real server with short TTLs and watches a key's life live:
// its lease runs out (RELEASED), then it is not kept alive (EXPIRED).
func TestEndToEnd(t *testing.T) {
	s := startServer(t, "-lease-ttl", "300ms", "-keepalive-ttl", "1200ms", "-log-format", "json")
	assert.Contains(t, s.out.String(), "keypool listening on "+s.url+"/ (GraphiQL)", "the banner names the playground")
	// after: 0 replays from the first event, so no event is missed while the
	// subscription starts.
	conn := s.subscribe(t, `subscription { keyEvents(after: 0) { seq type keyId } }`)
	var keys struct{ GenerateKeys []struct{ ID string } }
	s.mustPost(t, `mutation { generateKeys(count: 1) { id } }`, nil, &keys)
	id := keys.GenerateKeys[0].ID
	generated := readEvent(t, conn)
	require.Equal(t, event{Seq: generated.Seq, Type: "GENERATED", KeyID: id}, generated)

	start := time.Now()
	var lease struct{ AcquireKey struct{ Token string } }
	s.mustPost(t, `mutation { acquireKey { token key { id } } }`, nil, &lease)
	assert.Equal(t, event{generated.Seq + 1, "ACQUIRED", id}, readEvent(t, conn))

	released := readEvent(t, conn)
	assert.Equal(t, event{generated.Seq + 2, "RELEASED", id}, released)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "never early")
	var key struct{ Key *struct{ Status string } }
	s.mustPost(t, `query($id: ID!) { key(id: $id) { status } }`, map[string]any{"id": id}, &key)
	if key.Key != nil { // unless the keep-alive ran out too on a very slow machine
		assert.Equal(t, "AVAILABLE", key.Key.Status)
	}

	assert.Equal(t, event{generated.Seq + 3, "EXPIRED", id}, readEvent(t, conn))
	s.mustPost(t, `query($id: ID!) { key(id: $id) { status } }`, map[string]any{"id": id}, &key)
	assert.Nil(t, key.Key, "the key is gone")
	assert.JSONEq(t, `{"total":0,"available":0,"blocked":0}`, s.stats(t))

	// Shutdown: run returns nil, and the open subscription is closed, not left
	// hanging. The client keeps reading, as a browser does, to answer the close.
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
	start = time.Now()
	require.NoError(t, s.stop(t))
	assert.Less(t, time.Since(start), 3*time.Second, "shutdown is prompt")
	err := <-closed
	assert.False(t, isTimeout(err), "the socket was not closed: %v", err)
	assert.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err), "closed cleanly: %v", err)
}

// isTimeout says whether err is, or wraps, a timeout: a deadline of a net.Conn, or a
// websocket read's context that ended.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// TestShutdownEndsSSE checks that an SSE stream does not hold up shutdown.
func TestShutdownEndsSSE(t *testing.T) {
	s := startServer(t)
	req, err := http.NewRequest(http.MethodPost, s.url+"/graphql",
		strings.NewReader(`{"query": "subscription { keyEvents { seq } }"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)

	start := time.Now()
	require.NoError(t, s.stop(t))
	assert.Less(t, time.Since(start), 5*time.Second)
	_, err = io.ReadAll(res.Body) // ends: the server closed the stream
	_ = err
}

// TestServerSurvivesBadInput sends what a careless or hostile client might, and
// checks each gets a 4xx or a coded error, the pool is unchanged, and the server
// keeps serving.
func TestServerSurvivesBadInput(t *testing.T) {
	s := startServer(t)
	s.mustPost(t, `mutation { generateKeys(count: 5) { id } }`, nil, nil)
	before := s.stats(t)

	status, _ := s.postBody(t, []byte(`{"query": `))
	assert.Equal(t, http.StatusBadRequest, status, "malformed JSON")

	status, _ = s.postBody(t, append([]byte(`{"query": "{ stats { total } }", "pad": "`), bytes.Repeat([]byte("x"), 8<<20)...))
	assert.Equal(t, http.StatusRequestEntityTooLarge, status, "8 MiB body")

	var flood strings.Builder
	flood.WriteString("mutation {")
	for i := range 300 {
		flood.WriteString(" a" + strconv.Itoa(i) + ": generateKeys(count: 10000) { id }")
	}
	flood.WriteString(" }")
	_, resp := s.post(t, flood.String(), nil)
	require.NotEmpty(t, resp.Errors)
	assert.Equal(t, "COMPLEXITY_LIMIT_EXCEEDED", resp.Errors[0].Extensions["code"])

	for _, count := range []int{0, -1, 100000000} {
		_, resp := s.post(t, `mutation($n: Int!) { generateKeys(count: $n) { id } }`, map[string]any{"n": count})
		require.Len(t, resp.Errors, 1)
		assert.Equal(t, "BAD_USER_INPUT", resp.Errors[0].Extensions["code"], "count %d", count)
	}
	for _, id := range []string{"", "no-such-key"} {
		_, resp := s.post(t, `mutation($id: ID!) { keepAlive(id: $id) { id } }`, map[string]any{"id": id})
		require.Len(t, resp.Errors, 1)
		assert.Equal(t, "NOT_FOUND", resp.Errors[0].Extensions["code"], "id %q", id)
	}
	assert.Equal(t, before, s.stats(t))

	res, err := http.Get(s.url + "/")
	require.NoError(t, err)
	defer res.Body.Close()
	page, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, string(page), "/graphql", "the playground points at the API")
}

func TestRunRefusesBadConfig(t *testing.T) {
	err := run(context.Background(), []string{"keypool", "-lease-ttl", "nope"}, func(string) string { return "" }, io.Discard, io.Discard, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-lease-ttl")

	err = run(context.Background(), []string{"keypool", "-addr", "127.0.0.1:0"},
		func(k string) string { return map[string]string{"KEYPOOL_STORE": "postgres://db/keys"}[k] }, io.Discard, io.Discard, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-store")
}
