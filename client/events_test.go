package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/keystore"
)

const eventTimeout = 10 * time.Second

func nextEvent(t *testing.T, s *client.Subscription) client.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		require.True(t, ok, "the subscription ended: %v", s.Err())
		return ev
	case <-time.After(eventTimeout):
		t.Fatal("no event")
		return client.Event{}
	}
}

func endOf(t *testing.T, s *client.Subscription) error {
	t.Helper()
	for {
		select {
		case _, ok := <-s.Events():
			if !ok {
				return s.Err()
			}
		case <-time.After(eventTimeout):
			t.Fatal("the subscription did not end")
		}
	}
}

func after(n int64) *int64 { return &n }

func TestSubscribeLive(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ts := newTestServer(t, clock, keystore.Options{})
	c := ts.client(t)
	ctx := testContext(t)

	s, err := c.Subscribe(ctx, client.SubscribeOptions{})
	require.NoError(t, err)
	defer s.Close()
	waitFor(t, "subscribed", func() bool { return ts.obs.subscribers.Load() == 1 })

	keys, err := c.GenerateKeys(ctx, 1)
	require.NoError(t, err)
	_, err = c.AcquireKey(ctx, client.AcquireOptions{TTL: time.Second})
	require.NoError(t, err)
	clock.Advance(time.Second)

	want := []client.EventType{client.Generated, client.Acquired, client.Released}
	for i, typ := range want {
		ev := nextEvent(t, s)
		assert.Equal(t, typ, ev.Type)
		assert.Equal(t, keys[0].ID, ev.KeyID)
		assert.Equal(t, int64(i+1), ev.Seq)
	}
	last, ok := s.Last()
	assert.True(t, ok)
	assert.Equal(t, int64(3), last)

	s.Close()
	assert.NoError(t, endOf(t, s), "Close ends it without an error")
	waitFor(t, "the server's subscription ends", func() bool { return ts.obs.subscribers.Load() == 0 })
}

func TestSubscribeAfterAndTypes(t *testing.T) {
	ts := newTestServer(t, clockwork.NewFakeClock(), keystore.Options{})
	c := ts.client(t)
	ctx := testContext(t)
	keys, err := c.GenerateKeys(ctx, 3) // seq 1..3
	require.NoError(t, err)
	require.NoError(t, c.DeleteKey(ctx, keys[1].ID)) // seq 4

	s, err := c.Subscribe(ctx, client.SubscribeOptions{After: after(1)})
	require.NoError(t, err)
	for _, seq := range []int64{2, 3, 4} {
		assert.Equal(t, seq, nextEvent(t, s).Seq)
	}
	s.Close()

	s, err = c.Subscribe(ctx, client.SubscribeOptions{After: after(0), Types: []client.EventType{client.Deleted}})
	require.NoError(t, err)
	ev := nextEvent(t, s)
	assert.Equal(t, client.Event{Seq: 4, Seq64: "4", Stream: ev.Stream, Pool: "default", Type: client.Deleted, KeyID: keys[1].ID, At: ev.At}, ev)
	s.Close()
}

// TestSubscribeResumesAfterDrop cuts the connection, and makes events while the
// client is disconnected: the client must reconnect and get them, in order, without
// gaps or repeats.
func TestSubscribeResumesAfterDrop(t *testing.T) {
	ts := newTestServer(t, clockwork.NewFakeClock(), keystore.Options{})
	proxy, c := ts.viaProxy(t)
	ctx := testContext(t)

	var mu sync.Mutex
	var resumedAfter []*int64
	s, err := c.Subscribe(ctx, client.SubscribeOptions{
		After: after(0),
		OnReconnect: func(err error, after *int64, delay time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			resumedAfter = append(resumedAfter, after)
			if len(resumedAfter) == 1 {
				// Disconnected: these events can reach the client only by replay.
				_, err := ts.store.Generate(context.Background(), "", 3)
				assert.NoError(t, err)
			}
		},
	})
	require.NoError(t, err)
	defer s.Close()

	_, err = c.GenerateKeys(ctx, 2)
	require.NoError(t, err)
	assert.Equal(t, int64(1), nextEvent(t, s).Seq)
	assert.Equal(t, int64(2), nextEvent(t, s).Seq)

	proxy.Cut()
	for seq := int64(3); seq <= 5; seq++ {
		assert.Equal(t, seq, nextEvent(t, s).Seq, "replayed after the reconnection")
	}
	_, err = c.GenerateKeys(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, int64(6), nextEvent(t, s).Seq, "live again")

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, resumedAfter)
	require.NotNil(t, resumedAfter[0])
	assert.Equal(t, int64(2), *resumedAfter[0])
}

func TestSubscribeBadArgumentEnds(t *testing.T) {
	ts := newTestServer(t, clockwork.NewFakeClock(), keystore.Options{})
	c := ts.client(t)
	s, err := c.Subscribe(testContext(t), client.SubscribeOptions{Types: []client.EventType{"EXPLODED"}})
	require.NoError(t, err)
	defer s.Close()
	err = endOf(t, s)
	assert.ErrorIs(t, err, client.ErrValidationFailed, "a coded error ends the subscription: %v", err)
}

func TestSubscribeContextEnds(t *testing.T) {
	ts := newTestServer(t, clockwork.NewFakeClock(), keystore.Options{})
	c := ts.client(t)
	ctx, cancel := context.WithCancel(testContext(t))
	s, err := c.Subscribe(ctx, client.SubscribeOptions{})
	require.NoError(t, err)
	cancel()
	assert.ErrorIs(t, endOf(t, s), context.Canceled)
	s.Close()
}

func TestSubscribeUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c, err := client.New(srv.URL)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Subscribe(testContext(t), client.SubscribeOptions{})
	assert.Error(t, err, "the first connection is not retried")
}

// scriptedServer speaks graphql-transport-ws from a script, one function per
// connection, for what the real server does only under load or in later versions:
// pings, SLOW_CONSUMER, coded errors on subscribe.
func scriptedServer(t *testing.T, scripts ...func(t *testing.T, conn *wsConn)) *httptest.Server {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		mu.Lock()
		i := n
		n++
		mu.Unlock()
		if i >= len(scripts) {
			t.Errorf("connection %d: no script", i+1)
			return
		}
		scripts[i](t, &wsConn{conn: conn, ctx: r.Context()})
	}))
	t.Cleanup(srv.Close)
	return srv
}

type wsConn struct {
	conn *websocket.Conn
	ctx  context.Context
}

type wsMsg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (c *wsConn) read(t *testing.T, typ string) wsMsg {
	var m wsMsg
	require.NoError(t, wsjson.Read(c.ctx, c.conn, &m))
	require.Equal(t, typ, m.Type)
	return m
}

func (c *wsConn) send(t *testing.T, m wsMsg) {
	require.NoError(t, wsjson.Write(c.ctx, c.conn, m))
}

// accept answers connection_init and returns the variables of the subscription.
func (c *wsConn) accept(t *testing.T) map[string]any {
	c.read(t, "connection_init")
	c.send(t, wsMsg{Type: "connection_ack"})
	var payload struct {
		Query     string         `json:"query"`
		Variables map[string]any `json:"variables"`
	}
	sub := c.read(t, "subscribe")
	require.NoError(t, json.Unmarshal(sub.Payload, &payload))
	require.Contains(t, payload.Query, "keyEvents")
	return payload.Variables
}

func (c *wsConn) event(t *testing.T, seq int) {
	c.send(t, wsMsg{Type: "next", ID: "1", Payload: json.RawMessage(
		`{"data":{"keyEvents":{"seq64":"` + strconv.Itoa(seq) + `","type":"GENERATED","keyId":"k` + strconv.Itoa(seq) + `","at":"2026-01-01T00:00:00Z"}}}`)})
}

// TestSubscribeSlowConsumerResumes: a stream cut with SLOW_CONSUMER is resumed
// after the last seq delivered; the server's pings are answered; a coded error
// that is not about the connection ends the subscription with that code.
func TestSubscribeSlowConsumerResumes(t *testing.T) {
	srv := scriptedServer(t,
		func(t *testing.T, c *wsConn) {
			vars := c.accept(t)
			assert.Equal(t, "5", vars["after64"])
			assert.Equal(t, []any{"GENERATED"}, vars["types"])
			c.send(t, wsMsg{Type: "ping"})
			c.read(t, "pong")
			c.event(t, 6)
			c.event(t, 7)
			c.send(t, wsMsg{Type: "next", ID: "1", Payload: json.RawMessage(
				`{"data":null,"errors":[{"message":"subscriber fell more than 64 events behind; resume with after: 7","extensions":{"code":"SLOW_CONSUMER"}}]}`)})
			c.send(t, wsMsg{Type: "complete", ID: "1"})
			_, _, _ = c.conn.Read(c.ctx) // until the client hangs up
		},
		func(t *testing.T, c *wsConn) {
			vars := c.accept(t)
			assert.Equal(t, "7", vars["after64"], "resumed after the last seq delivered")
			c.event(t, 7) // a repeat is not delivered twice
			c.event(t, 8)
			c.send(t, wsMsg{Type: "error", ID: "1", Payload: json.RawMessage(
				`[{"message":"events after 8 are gone; the oldest retained is 100","extensions":{"code":"EVENTS_COMPACTED","oldest":100}}]`)})
			_, _, _ = c.conn.Read(c.ctx)
		},
	)
	c, err := client.New(srv.URL)
	require.NoError(t, err)
	defer c.Close()
	var reasons []error
	s, err := c.Subscribe(testContext(t), client.SubscribeOptions{
		After: after(5),
		Types: []client.EventType{client.Generated},
		OnReconnect: func(err error, after *int64, delay time.Duration) {
			reasons = append(reasons, err)
		},
	})
	require.NoError(t, err)
	defer s.Close()
	for _, seq := range []int64{6, 7, 8} {
		assert.Equal(t, seq, nextEvent(t, s).Seq)
	}
	err = endOf(t, s)
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, client.Code("EVENTS_COMPACTED"), e.Code)
	assert.Equal(t, float64(100), e.Extensions["oldest"])
	require.Len(t, reasons, 1)
	assert.ErrorIs(t, reasons[0], client.ErrSlowConsumer)
}

// TestSubscribeIdleTimeout: a connection on which nothing arrives, not even the
// server's pings, is taken for dead and replaced.
func TestSubscribeIdleTimeout(t *testing.T) {
	silent := func(t *testing.T, c *wsConn) {
		c.accept(t)
		_, _, _ = c.conn.Read(c.ctx) // nothing, until the client hangs up
	}
	srv := scriptedServer(t, silent, func(t *testing.T, c *wsConn) {
		c.accept(t)
		c.event(t, 1)
		_, _, _ = c.conn.Read(c.ctx)
	})
	c, err := client.New(srv.URL)
	require.NoError(t, err)
	defer c.Close()
	reconnected := make(chan error, 1)
	s, err := c.Subscribe(testContext(t), client.SubscribeOptions{
		IdleTimeout: 200 * time.Millisecond,
		OnReconnect: func(err error, after *int64, delay time.Duration) { reconnected <- err },
	})
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, int64(1), nextEvent(t, s).Seq, "from the second connection")
	assert.ErrorIs(t, <-reconnected, context.DeadlineExceeded)
}

// TestSubscribePast2To53: seqs past 2^31 and 2^53 travel as BigInt strings, both ways,
// and come through exact.
func TestSubscribePast2To53(t *testing.T) {
	const big = int64(1<<62 + 1)
	srv := scriptedServer(t, func(t *testing.T, c *wsConn) {
		vars := c.accept(t)
		assert.Equal(t, "4611686018427387904", vars["after64"])
		c.event(t, int(big))
		_, _, _ = c.conn.Read(c.ctx)
	})
	c, err := client.New(srv.URL)
	require.NoError(t, err)
	defer c.Close()
	s, err := c.Subscribe(testContext(t), client.SubscribeOptions{After: after(big - 1)})
	require.NoError(t, err)
	defer s.Close()
	ev := nextEvent(t, s)
	assert.Equal(t, big, ev.Seq)
	assert.Equal(t, "4611686018427387905", ev.Seq64)
}
