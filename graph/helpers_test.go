package graph_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

// testEnv is a store behind the real GraphQL handler, served over loopback.
type testEnv struct {
	store keystore.Store
	clock *clockwork.FakeClock // nil when the store runs on the real clock
	srv   *httptest.Server
	cuts  chan struct{} // one value per slow-consumer cut
	subs  *atomic.Int64 // live store subscriptions
	// waiters counts the Acquire calls waiting for a key.
	waiters *atomic.Int64
}

// waitWaiters waits until n Acquire calls wait for a key.
func (e *testEnv) waitWaiters(t *testing.T, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return e.waiters.Load() == n }, streamTimeout, time.Millisecond,
		"want %d waiters, have %d", n, e.waiters.Load())
}

// waitSubscribers waits until the store has n live subscriptions, so that a test's
// next event is seen live.
func (e *testEnv) waitSubscribers(t *testing.T, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return e.subs.Load() == n }, streamTimeout, time.Millisecond,
		"want %d subscribers, have %d", n, e.subs.Load())
}

// newEnv serves a fresh in-memory store on a fake clock.
func newEnv(t *testing.T, opts keystore.Options) *testEnv {
	t.Helper()
	return newEnvOnClock(t, clockwork.NewFakeClock(), opts)
}

func newEnvOnClock(t *testing.T, clock clockwork.Clock, opts keystore.Options) *testEnv {
	t.Helper()
	cuts := make(chan struct{}, 16)
	subs, waiters := new(atomic.Int64), new(atomic.Int64)
	opts.Observer = cutObserver{cuts: cuts, subs: subs, waiters: waiters}
	store, err := keystore.NewMemory(clock, opts)
	require.NoError(t, err)
	env := newEnvForStore(t, store)
	env.cuts = cuts
	env.subs = subs
	env.waiters = waiters
	if fc, ok := clock.(*clockwork.FakeClock); ok {
		env.clock = fc
	}
	t.Cleanup(func() { _ = store.Close() })
	return env
}

func newEnvForStore(t *testing.T, store keystore.Store) *testEnv {
	t.Helper()
	srv := httptest.NewServer(graph.NewServer(store, graph.ServerOptions{Logger: testLogger(t)}))
	t.Cleanup(srv.Close)
	return &testEnv{store: store, srv: srv}
}

// testLogger logs to the test's output, shown only when it fails or runs with -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// cutObserver reports slow-consumer cuts and the number of live subscriptions to a test.
type cutObserver struct {
	keystore.NopObserver
	cuts    chan struct{}
	subs    *atomic.Int64
	waiters *atomic.Int64
}

func (o cutObserver) SubscribersChanged(delta int) { o.subs.Add(int64(delta)) }
func (o cutObserver) WaitersChanged(delta int)     { o.waiters.Add(int64(delta)) }

func (o cutObserver) SlowConsumerCut() {
	select {
	case o.cuts <- struct{}{}:
	default:
	}
}

// gqlError is an error as clients see it.
type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

func (e gqlError) code() string { s, _ := e.Extensions["code"].(string); return s }

// response is a GraphQL response as clients see it.
type response struct {
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
	status int
}

// codes lists the errors' extensions.code in order.
func (r response) codes() []string {
	var codes []string
	for _, e := range r.Errors {
		codes = append(codes, e.code())
	}
	return codes
}

// decode unmarshals the data into v.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.Data, v), "data: %s", r.Data)
}

// post sends a query as POST JSON and returns the response, whatever its status.
func (e *testEnv) post(t *testing.T, query string, vars map[string]any) response {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	require.NoError(t, err)
	return e.postRaw(t, body)
}

func (e *testEnv) postRaw(t *testing.T, body []byte) response {
	t.Helper()
	res, err := http.Post(e.srv.URL, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	resp := response{status: res.StatusCode}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/") {
		require.NoError(t, json.Unmarshal(raw, &resp), "body: %s", raw)
	}
	return resp
}

// mustPost is post for a query that must succeed.
func (e *testEnv) mustPost(t *testing.T, query string, vars map[string]any, v any) {
	t.Helper()
	resp := e.post(t, query, vars)
	require.Equal(t, http.StatusOK, resp.status)
	require.Empty(t, resp.Errors)
	if v != nil {
		resp.decode(t, v)
	}
}

type stats struct{ Total, Available, Blocked int }

func (e *testEnv) stats(t *testing.T) stats {
	t.Helper()
	var out struct{ Stats stats }
	e.mustPost(t, `{ stats { total available blocked } }`, nil, &out)
	return out.Stats
}

// generate makes n keys and returns their ids.
func (e *testEnv) generate(t *testing.T, n int) []string {
	t.Helper()
	var out struct{ GenerateKeys []struct{ ID string } }
	e.mustPost(t, `mutation($n: Int!) { generateKeys(count: $n) { id } }`, map[string]any{"n": n}, &out)
	ids := make([]string, len(out.GenerateKeys))
	for i, k := range out.GenerateKeys {
		ids[i] = k.ID
	}
	return ids
}

// stream is one subscription, over any transport.
type stream interface {
	// next returns the next response; done is true when the server completed the stream.
	next(t *testing.T) (resp response, done bool)
	close()
}

// streamTimeout bounds every read of a stream in tests.
const streamTimeout = 10 * time.Second

// transports lists the subscription transports every subscription test runs on.
var transports = []struct {
	name      string
	subscribe func(t *testing.T, e *testEnv, query string, vars map[string]any, opts ...dialOption) stream
}{
	{"graphql-transport-ws", func(t *testing.T, e *testEnv, q string, v map[string]any, opts ...dialOption) stream {
		return e.subscribeWS(t, "graphql-transport-ws", q, v, opts...)
	}},
	{"graphql-ws", func(t *testing.T, e *testEnv, q string, v map[string]any, opts ...dialOption) stream {
		return e.subscribeWS(t, "graphql-ws", q, v, opts...)
	}},
	{"sse", func(t *testing.T, e *testEnv, q string, v map[string]any, opts ...dialOption) stream {
		return e.subscribeSSE(t, q, v, opts...)
	}},
}

// dialOption tunes a test client's connection.
type dialOption struct {
	// readBuffer, if set, caps the socket's receive buffer so that a client that stops
	// reading stalls the server quickly.
	readBuffer int
}

func dialer(opts []dialOption) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		for _, o := range opts {
			if o.readBuffer > 0 {
				_ = conn.(*net.TCPConn).SetReadBuffer(o.readBuffer)
			}
		}
		return conn, nil
	}
}

// dialWebsocket opens a websocket to the server at srvURL (its http:// URL) offering
// protocol, with header (nil for none), as every test's client does: on a connection of
// its own (through dialer(opts)), closed if the handshake fails, and with no limit on
// the size of a message read. A failed handshake's response carries the first 1024
// bytes of its body; a successful one's has none to close.
func dialWebsocket(srvURL, protocol string, header http.Header, opts ...dialOption) (*websocket.Conn, *http.Response, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext:        dialer(opts),
		DisableKeepAlives:  true, // a refused handshake's connection is closed, not kept
		DisableCompression: true,
	}}
	conn, res, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srvURL, "http"), &websocket.DialOptions{
		HTTPClient:   client,
		HTTPHeader:   header,
		Subprotocols: []string{protocol},
	})
	if err != nil {
		return nil, res, err
	}
	conn.SetReadLimit(-1) // the library's default is 32 KiB
	return conn, res, nil
}

// wsStream is a subscription over a raw websocket, in either subprotocol.
type wsStream struct {
	conn     *websocket.Conn
	protocol string
	once     sync.Once
}

func (e *testEnv) subscribeWS(t *testing.T, protocol, query string, vars map[string]any, opts ...dialOption) *wsStream {
	t.Helper()
	conn, _, err := dialWebsocket(e.srv.URL, protocol, nil, opts...)
	require.NoError(t, err)
	require.Equal(t, protocol, conn.Subprotocol())
	s := &wsStream{conn: conn, protocol: protocol}
	t.Cleanup(s.close)

	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"type": "connection_init"}))
	msg := s.read(t)
	require.Equal(t, "connection_ack", msg.Type)
	start := "subscribe"
	if protocol == "graphql-ws" {
		start = "start"
	}
	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{
		"id": "1", "type": start, "payload": map[string]any{"query": query, "variables": vars},
	}))
	return s
}

type wsMessage struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// read returns the next message that is not a keep-alive, answering pings.
func (s *wsStream) read(t *testing.T) wsMessage {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
		var msg wsMessage
		err := wsjson.Read(ctx, s.conn, &msg)
		cancel()
		require.NoError(t, err)
		switch msg.Type {
		case "ka", "pong":
			continue
		case "ping":
			require.NoError(t, wsjson.Write(context.Background(), s.conn, map[string]any{"type": "pong"}))
			continue
		}
		return msg
	}
}

func (s *wsStream) next(t *testing.T) (response, bool) {
	t.Helper()
	msg := s.read(t)
	var resp response
	switch msg.Type {
	case "next", "data":
		require.NoError(t, json.Unmarshal(msg.Payload, &resp), "payload: %s", msg.Payload)
		return resp, false
	case "error":
		// Protocol-level errors: graphql-transport-ws sends a list, graphql-ws one object.
		if err := json.Unmarshal(msg.Payload, &resp.Errors); err != nil {
			var one gqlError
			require.NoError(t, json.Unmarshal(msg.Payload, &one))
			resp.Errors = []gqlError{one}
		}
		return resp, false
	case "complete":
		return response{}, true
	}
	t.Fatalf("unexpected websocket message %+v", msg)
	return response{}, true
}

func (s *wsStream) close() { s.once.Do(func() { _ = s.conn.CloseNow() }) }

// sseStream is a subscription over server-sent events.
type sseStream struct {
	body   io.ReadCloser
	events *bufio.Reader
	once   sync.Once
}

func (e *testEnv) subscribeSSE(t *testing.T, query string, vars map[string]any, opts ...dialOption) *sseStream {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, e.srv.URL, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	client := &http.Client{Transport: &http.Transport{DialContext: dialer(opts)}}
	res, err := client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, res.Header.Get("Content-Type"), "text/event-stream")
	s := &sseStream{body: res.Body, events: bufio.NewReaderSize(res.Body, 1<<16)}
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) next(t *testing.T) (response, bool) {
	t.Helper()
	var event, data string
	for {
		line, err := readLine(s.events)
		if errors.Is(err, io.EOF) && event == "" {
			return response{}, true // the server ended the stream
		}
		require.NoError(t, err)
		switch {
		case line == "":
			switch event {
			case "complete":
				return response{}, true
			case "next":
				var resp response
				require.NoError(t, json.Unmarshal([]byte(data), &resp), "data: %s", data)
				return resp, false
			}
			event, data = "", ""
		case strings.HasPrefix(line, ":"): // comment or keep-alive
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func (s *sseStream) close() { s.once.Do(func() { _ = s.body.Close() }) }

// keyEvent is a KeyEvent as clients see it.
type keyEvent struct {
	Seq   int64
	Type  string
	KeyID string
	At    string
}

// nextEvent reads the next event of a keyEvents subscription, failing on anything else.
func nextEvent(t *testing.T, s stream) keyEvent {
	t.Helper()
	resp, done := s.next(t)
	require.False(t, done, "stream ended early")
	require.Empty(t, resp.Errors)
	var out struct{ KeyEvents keyEvent }
	resp.decode(t, &out)
	return out.KeyEvents
}
