package graph_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

// rawSocket is a graphql-transport-ws (or legacy) client that sees every message.
type rawSocket struct {
	t      *testing.T
	conn   *websocket.Conn
	legacy bool
}

func dialSocket(t *testing.T, url, protocol string) *rawSocket {
	t.Helper()
	conn, _, err := dialWebsocket(url, protocol, nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.CloseNow() })
	return &rawSocket{t: t, conn: conn, legacy: protocol == "graphql-ws"}
}

func (s *rawSocket) send(msg map[string]any) {
	s.t.Helper()
	require.NoError(s.t, wsjson.Write(context.Background(), s.conn, msg))
}

func (s *rawSocket) init() *rawSocket {
	s.t.Helper()
	s.send(map[string]any{"type": "connection_init"})
	require.Equal(s.t, "connection_ack", s.read().Type)
	return s
}

func (s *rawSocket) subscribe(id, query string, vars map[string]any) {
	s.t.Helper()
	typ := "subscribe"
	if s.legacy {
		typ = "start"
	}
	s.send(map[string]any{"id": id, "type": typ, "payload": map[string]any{"query": query, "variables": vars}})
}

// read returns the next message that is not a ping, pong or keep-alive.
func (s *rawSocket) read() wsMessage {
	s.t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
		var msg wsMessage
		err := wsjson.Read(ctx, s.conn, &msg)
		cancel()
		require.NoError(s.t, err)
		switch msg.Type {
		case "ka", "pong":
			continue
		case "ping":
			s.send(map[string]any{"type": "pong"})
			continue
		}
		return msg
	}
}

// closed reads until the server closes the socket and returns its close code.
func (s *rawSocket) closed() (websocket.StatusCode, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	for {
		_, data, err := s.conn.Read(ctx)
		if err == nil {
			var msg wsMessage
			if json.Unmarshal(data, &msg) == nil && msg.Type == "ping" {
				_ = wsjson.Write(context.Background(), s.conn, map[string]any{"type": "pong"})
			}
			continue
		}
		var ce websocket.CloseError
		require.True(s.t, errors.As(err, &ce), "closed without a close message: %v", err)
		return ce.Code, ce.Reason
	}
}

func codesOf(t *testing.T, payload json.RawMessage) []string {
	t.Helper()
	var errs []gqlError
	require.NoError(t, json.Unmarshal(payload, &errs), "%s", payload)
	var codes []string
	for _, e := range errs {
		codes = append(codes, e.code())
	}
	return codes
}

// TestWebsocketErrorEndsTheOperation is the case graphql-ws clients (and Apollo's
// GraphQLWsLink) miscounted on gqlgen's transport: an operation that fails before it
// runs gets an error and nothing more, not error then complete; a live subscription
// on the same socket goes on; and the complexity limit's refusal is an error too.
func TestWebsocketErrorEndsTheOperation(t *testing.T) {
	for _, protocol := range []string{"graphql-transport-ws", "graphql-ws"} {
		t.Run(protocol, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			s := dialSocket(t, e.srv.URL, protocol).init()
			s.subscribe("live", eventsQuery, nil)
			e.waitSubscribers(t, 1)

			var flood strings.Builder
			for i := range 150 {
				fmt.Fprintf(&flood, " a%d: stats { total }", i)
			}
			refused := map[string]string{
				"parse":      `{ stats {`,
				"validation": `{ nope }`,
				"variables":  `query($id: ID!) { key(id: $id) { id } }`,
				"complexity": `{` + flood.String() + ` }`,
			}
			for id, query := range refused {
				s.subscribe(id, query, nil)
				msg := s.read()
				require.Equal(t, id, msg.ID)
				require.Equal(t, "error", msg.Type, "%s: %s", id, msg.Payload)
			}
			s.subscribe("c", `{`+flood.String()+` }`, nil)
			msg := s.read()
			require.Equal(t, "error", msg.Type)
			assert.Equal(t, []string{"COMPLEXITY_LIMIT_EXCEEDED"}, codesOf(t, msg.Payload))

			// The live subscription goes on, and nothing else arrives first: no late
			// complete for any refused operation.
			id := e.generate(t, 1)[0]
			msg = s.read()
			require.Equal(t, "live", msg.ID, "%s %s", msg.Type, msg.Payload)
			assert.Contains(t, string(msg.Payload), id)
			s.subscribe("q", `{ stats { total } }`, nil)
			for _, want := range []string{"next", "data", "complete"} {
				if (want == "next") == s.legacy {
					continue
				}
				msg := s.read()
				require.Equal(t, "q", msg.ID)
				require.Equal(t, want, msg.Type)
			}
		})
	}
}

// TestWebsocketClientComplete checks that after a client completes an operation the
// server sends nothing more for it, and that the id may be used again.
func TestWebsocketClientComplete(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	s := dialSocket(t, e.srv.URL, "graphql-transport-ws").init()
	s.subscribe("1", eventsQuery, nil)
	e.waitSubscribers(t, 1)
	s.send(map[string]any{"id": "1", "type": "complete"})
	e.waitSubscribers(t, 0)
	s.subscribe("1", eventsQuery, nil) // free again
	e.waitSubscribers(t, 1)
	id := e.generate(t, 1)[0]
	msg := s.read()
	require.Equal(t, "next", msg.Type, "no complete for the first operation 1")
	assert.Contains(t, string(msg.Payload), id)
}

// TestWebsocketDuplicateID checks that a subscribe whose id is live closes the socket
// with 4409, in both protocols.
func TestWebsocketDuplicateID(t *testing.T) {
	for _, protocol := range []string{"graphql-transport-ws", "graphql-ws"} {
		t.Run(protocol, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			s := dialSocket(t, e.srv.URL, protocol).init()
			s.subscribe("x", eventsQuery, nil)
			e.waitSubscribers(t, 1)
			s.subscribe("x", eventsQuery, nil)
			code, reason := s.closed()
			assert.Equal(t, websocket.StatusCode(4409), code)
			assert.Equal(t, "Subscriber for x already exists", reason)
			e.waitSubscribers(t, 0)
		})
	}
}

// TestWebsocketOperationLimit checks that one operation more than
// MaxSocketOperations is refused with an error, and the others go on.
func TestWebsocketOperationLimit(t *testing.T) {
	e := newEnv(t, keystore.Options{})
	s := dialSocket(t, e.srv.URL, "graphql-transport-ws").init()
	for i := range graph.MaxSocketOperations {
		s.subscribe(fmt.Sprint(i), eventsQuery, nil)
	}
	e.waitSubscribers(t, graph.MaxSocketOperations)
	s.subscribe("one too many", eventsQuery, nil)
	msg := s.read()
	require.Equal(t, "one too many", msg.ID)
	require.Equal(t, "error", msg.Type)
	assert.Equal(t, []string{"OPERATION_LIMIT_EXCEEDED"}, codesOf(t, msg.Payload))

	e.generate(t, 1)
	seen := map[string]bool{}
	for range graph.MaxSocketOperations {
		msg := s.read()
		require.Equal(t, "next", msg.Type)
		seen[msg.ID] = true
	}
	assert.Len(t, seen, graph.MaxSocketOperations, "every operation got the event")
}

// TestWebsocketIdleAndInitTimeouts checks that a socket that never sends
// connection_init is closed with 4408, and one that runs no operation with 1000,
// while a socket with a live subscription, opened at the same time, is not cut.
func TestWebsocketIdleAndInitTimeouts(t *testing.T) {
	store, err := keystore.NewMemory(clockwork.NewRealClock(), keystore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	const timeout = 200 * time.Millisecond
	srv := httptestServer(t, graph.NewServer(store, graph.ServerOptions{
		Logger:               testLogger(t),
		WebsocketInitTimeout: timeout,
		WebsocketIdleTimeout: timeout,
	}))
	e := &testEnv{store: store, srv: srv}

	start := time.Now() // before the server's clocks start
	live := dialSocket(t, srv.URL, "graphql-transport-ws").init()
	live.subscribe("1", eventsQuery, nil)
	neverInit := dialSocket(t, srv.URL, "graphql-transport-ws")
	idle := dialSocket(t, srv.URL, "graphql-transport-ws").init()
	legacyIdle := dialSocket(t, srv.URL, "graphql-ws").init()

	code, reason := neverInit.closed()
	assert.Equal(t, websocket.StatusCode(4408), code)
	assert.Equal(t, "Connection initialisation timeout", reason)
	for _, s := range []*rawSocket{idle, legacyIdle} {
		code, _ := s.closed()
		assert.Equal(t, websocket.StatusNormalClosure, code)
	}
	require.GreaterOrEqual(t, time.Since(start), timeout, "never early")

	// Well past the idle timeout, the live subscription still delivers.
	id := e.generate(t, 1)[0]
	msg := live.read()
	require.Equal(t, "next", msg.Type)
	assert.Contains(t, string(msg.Payload), id)

	// A socket whose last operation ended is idle from then on.
	q := dialSocket(t, srv.URL, "graphql-transport-ws").init()
	q.subscribe("q", `{ stats { total } }`, nil)
	require.Equal(t, "next", q.read().Type)
	require.Equal(t, "complete", q.read().Type)
	code, _ = q.closed()
	assert.Equal(t, websocket.StatusNormalClosure, code)
}
