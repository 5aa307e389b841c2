package graph_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/coder/websocket/wsjson"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/keystore"
)

const eventsQuery = `subscription($types: [KeyEventType!], $after: Int) {
  keyEvents(types: $types, after: $after) { seq type keyId at }
}`

func TestSubscriptionLive(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			s := tr.subscribe(t, e, eventsQuery, nil)
			e.waitSubscribers(t, 1)

			ids := e.generate(t, 2)
			lease := e.acquire(t)
			e.mustPost(t, `mutation($id: ID!) { unblockKey(id: $id) { id } }`, map[string]any{"id": lease.Key.ID}, nil)
			e.mustPost(t, `mutation($id: ID!) { deleteKey(id: $id) }`, map[string]any{"id": lease.Key.ID}, nil)
			e.acquire(t) // the other key
			e.clock.Advance(keystore.DefaultLeaseTTL)
			e.clock.Advance(keystore.DefaultKeepAliveTTL)

			other := ids[0]
			if other == lease.Key.ID {
				other = ids[1]
			}
			want := []struct{ typ, key string }{
				{"GENERATED", ids[0]}, {"GENERATED", ids[1]},
				{"ACQUIRED", lease.Key.ID}, {"UNBLOCKED", lease.Key.ID}, {"DELETED", lease.Key.ID},
				{"ACQUIRED", other}, {"RELEASED", other}, {"EXPIRED", other},
			}
			var last int64
			for i, w := range want {
				ev := nextEvent(t, s)
				assert.Equal(t, w.typ, ev.Type, "event %d", i)
				assert.Equal(t, w.key, ev.KeyID, "event %d", i)
				if i > 0 {
					assert.Equal(t, last+1, ev.Seq, "seq grows by one")
				}
				last = ev.Seq
				parseTime(t, ev.At)
			}
		})
	}
}

func TestSubscriptionTypesFilter(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			s := tr.subscribe(t, e, eventsQuery, map[string]any{"types": []string{"RELEASED", "EXPIRED"}})
			e.waitSubscribers(t, 1)

			id := e.generate(t, 1)[0]
			lease := e.acquire(t)
			e.clock.Advance(keystore.DefaultLeaseTTL)
			e.clock.Advance(keystore.DefaultKeepAliveTTL)

			released := nextEvent(t, s)
			assert.Equal(t, "RELEASED", released.Type)
			assert.Equal(t, id, released.KeyID)
			assert.Equal(t, parseTime(t, lease.ExpiresAt), parseTime(t, released.At), "at is the deadline that passed")
			expired := nextEvent(t, s)
			assert.Equal(t, "EXPIRED", expired.Type)
			assert.Greater(t, expired.Seq, released.Seq)
		})
	}
}

func TestSubscriptionAfterReplays(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			ids := e.generate(t, 3) // seq 1, 2, 3
			s := tr.subscribe(t, e, eventsQuery, map[string]any{"after": 1})
			for i, seq := range []int64{2, 3} {
				ev := nextEvent(t, s)
				assert.Equal(t, seq, ev.Seq)
				assert.Equal(t, ids[i+1], ev.KeyID)
			}
			e.waitSubscribers(t, 1)
			live := e.generate(t, 1)[0]
			ev := nextEvent(t, s)
			assert.Equal(t, int64(4), ev.Seq)
			assert.Equal(t, live, ev.KeyID)
		})
	}
}

func TestSubscriptionBadArguments(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			s := tr.subscribe(t, e, eventsQuery, map[string]any{"types": []string{"EXPLODED"}})
			resp, done := s.next(t)
			require.False(t, done)
			require.NotEmpty(t, resp.Errors)
			assert.Equal(t, "GRAPHQL_VALIDATION_FAILED", resp.Errors[0].code())
		})
	}
}

// TestSubscriptionSlowConsumer stalls a client that reads nothing until the store
// has published far more than it retains: the stream must end with SLOW_CONSUMER,
// and the pool must not have been slowed by it.
func TestSubscriptionSlowConsumer(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{EventRetention: 64})
			s := tr.subscribe(t, e, eventsQuery, nil, dialOption{readBuffer: 4096})
			e.waitSubscribers(t, 1)

			// 200 000 events, some 20 MB on the wire: more than the sockets buffer, so
			// the subscriber stalls and falls out of the 64-event ring.
			ctx := context.Background()
			for range 10 {
				keys, err := e.store.Generate(ctx, "", 10000)
				require.NoError(t, err)
				for _, k := range keys {
					require.NoError(t, e.store.Delete(ctx, k.ID))
				}
			}

			var events int
			var cutMessage string
			for {
				resp, done := s.next(t)
				require.False(t, done, "stream ended after %d events without SLOW_CONSUMER", events)
				if len(resp.Errors) > 0 {
					requireCode(t, resp, "SLOW_CONSUMER")
					cutMessage = resp.Errors[0].Message
					break
				}
				events++
				require.Less(t, events, 200000)
			}
			_, done := s.next(t)
			assert.True(t, done, "the stream ends after SLOW_CONSUMER")
			t.Logf("%d events before the cut", events)
			select {
			case <-e.cuts:
			case <-time.After(streamTimeout):
				t.Fatal("the store did not report the cut")
			}
			e.waitSubscribers(t, 0)

			// The client resumes where the message says, and gets the retained events.
			m := regexp.MustCompile(`after: (\d+)`).FindStringSubmatch(cutMessage)
			require.NotNil(t, m, "message %q", cutMessage)
			resumeAfter, err := strconv.ParseInt(m[1], 10, 64)
			require.NoError(t, err)
			// What it missed has left the ring: it is told so, with the oldest seq
			// retained, instead of being given a gap.
			refused := tr.subscribe(t, e, eventsQuery, map[string]any{"after": resumeAfter})
			resp, _ := refused.next(t)
			requireCode(t, resp, "EVENTS_COMPACTED")
			oldest, ok := resp.Errors[0].Extensions["oldestSeq"].(float64)
			require.True(t, ok, "no oldestSeq in %v", resp.Errors[0].Extensions)
			require.Greater(t, int64(oldest), resumeAfter+1)
			resumed := tr.subscribe(t, e, eventsQuery, map[string]any{"after": int64(oldest) - 1})
			ev := nextEvent(t, resumed)
			assert.Equal(t, int64(oldest), ev.Seq)
		})
	}
}

// TestSubscriptionNoLeak checks that every goroutine a subscription starts, in the
// server and in the store, ends once the client goes away, even when it leaves with
// events still queued for it (the forwarder is then blocked on a send).
func TestSubscriptionNoLeak(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			e.generate(t, 1) // warm up the server's connection goroutines
			ignore := goleak.IgnoreCurrent()

			s := tr.subscribe(t, e, eventsQuery, nil, dialOption{readBuffer: 4096})
			e.waitSubscribers(t, 1)
			e.generate(t, 1)
			nextEvent(t, s)
			// Far more than the sockets buffer, far less than the store retains: the
			// stream stalls with events queued, and is not cut.
			keys, err := e.store.Generate(context.Background(), "", 10000)
			require.NoError(t, err)
			for _, k := range keys {
				require.NoError(t, e.store.Delete(context.Background(), k.ID))
			}
			s.close()
			e.waitSubscribers(t, 0)
			e.srv.CloseClientConnections()
			goleak.VerifyNone(t, ignore)
		})
	}
}

// TestHalfOpenWebsocketIsDropped checks that a graphql-transport-ws client that stops
// answering pings (a half-open socket) is dropped, and its subscription ended.
func TestHalfOpenWebsocketIsDropped(t *testing.T) {
	store, err := keystore.NewMemory(clockwork.NewFakeClock(), keystore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	srv := httptestServer(t, graph.NewServer(store, graph.ServerOptions{
		Logger:           testLogger(t),
		PingPongInterval: 50 * time.Millisecond,
	}))

	conn, _, err := dialWebsocket(srv.URL, "graphql-transport-ws", nil)
	require.NoError(t, err)
	defer conn.CloseNow()
	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"type": "connection_init"}))
	require.NoError(t, wsjson.Write(context.Background(), conn, map[string]any{"id": "1", "type": "subscribe",
		"payload": map[string]any{"query": `subscription { keyEvents { seq } }`}}))

	// Read without ever answering a ping: the server must close the socket.
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	pings := 0
	for {
		var msg wsMessage
		if err := wsjson.Read(ctx, conn, &msg); err != nil {
			require.False(t, isTimeout(err), "the server never dropped the silent client")
			break
		}
		if msg.Type == "ping" {
			pings++
		}
	}
	assert.Positive(t, pings)
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// unavailableStore cannot be reached.
type unavailableStore struct{ keystore.Store }

func (unavailableStore) Subscribe(context.Context, keystore.SubscribeOptions) (*keystore.Subscription, error) {
	return nil, keystore.Errorf(keystore.EUNAVAILABLE, "the store cannot be reached")
}

func TestSubscriptionStoreUnavailable(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnvForStore(t, unavailableStore{})
			s := tr.subscribe(t, e, eventsQuery, nil)
			resp, done := s.next(t)
			require.False(t, done)
			requireCode(t, resp, "UNAVAILABLE")
			_, done = s.next(t)
			assert.True(t, done)
		})
	}
}

// TestSubscriptionStreamChanged: events name their stream, and resuming another
// stream (one from before a restart) is refused with STREAM_CHANGED naming the
// current one, on every transport, so that a client starts over instead of skipping
// up to its old seq.
func TestSubscriptionStreamChanged(t *testing.T) {
	const query = `subscription($after: Int, $stream: ID) { keyEvents(after: $after, stream: $stream) { seq stream } }`
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			e.generate(t, 1)
			s := tr.subscribe(t, e, query, map[string]any{"after": 0})
			resp, done := s.next(t)
			require.False(t, done)
			require.Empty(t, resp.Errors)
			var data struct{ KeyEvents struct{ Stream string } }
			require.NoError(t, json.Unmarshal(resp.Data, &data))
			stream := data.KeyEvents.Stream
			require.GreaterOrEqual(t, len(stream), 20)

			same := tr.subscribe(t, e, query, map[string]any{"after": 0, "stream": stream})
			resp, done = same.next(t)
			require.False(t, done)
			require.Empty(t, resp.Errors, "resuming the current stream")

			s = tr.subscribe(t, e, query, map[string]any{"after": 7, "stream": "before-the-restart"})
			resp, done = s.next(t)
			require.False(t, done)
			require.NotEmpty(t, resp.Errors)
			assert.Equal(t, "STREAM_CHANGED", resp.Errors[0].code())
			assert.Equal(t, stream, resp.Errors[0].Extensions["stream"])
		})
	}
}

// TestSubscriptionKeys: keyEvents(keys:) delivers the events of those keys only.
func TestSubscriptionKeys(t *testing.T) {
	const query = `subscription($keys: [ID!]) { keyEvents(keys: $keys) { keyId type } }`
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, keystore.Options{})
			ids := e.generate(t, 3)
			s := tr.subscribe(t, e, query, map[string]any{"keys": []string{ids[1]}})
			e.waitSubscribers(t, 1)
			for _, id := range ids {
				require.NoError(t, e.store.Delete(t.Context(), id))
			}
			resp, done := s.next(t)
			require.False(t, done)
			require.Empty(t, resp.Errors)
			assert.JSONEq(t, `{"keyEvents":{"keyId":"`+ids[1]+`","type":"DELETED"}}`, string(resp.Data))
		})
	}
	e := newEnv(t, keystore.Options{})
	many := make([]string, keystore.MaxEventKeys+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	s := transports[0].subscribe(t, e, query, map[string]any{"keys": many})
	resp, _ := s.next(t)
	require.NotEmpty(t, resp.Errors)
	assert.Equal(t, "BAD_USER_INPUT", resp.Errors[0].code())
}

// TestBigIntTwins: fence64 and seq64 answer fence and seq as strings of digits, and
// after64 resumes as after does (giving both is refused); EVENTS_COMPACTED names the
// oldest retained seq as oldestSeq64 too.
func TestBigIntTwins(t *testing.T) {
	e := newEnv(t, keystore.Options{EventRetention: 4})
	e.generate(t, 6)
	var acquired struct {
		AcquireKey struct {
			Fence   int64
			Fence64 string
		}
	}
	e.mustPost(t, `mutation { acquireKey { fence fence64 } }`, nil, &acquired)
	assert.Equal(t, int64(1), acquired.AcquireKey.Fence)
	assert.Equal(t, "1", acquired.AcquireKey.Fence64)

	const query = `subscription($after: Int, $after64: BigInt) { keyEvents(after: $after, after64: $after64) { seq seq64 } }`
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := tr.subscribe(t, e, query, map[string]any{"after64": "5"})
			resp, done := s.next(t)
			require.False(t, done)
			require.Empty(t, resp.Errors)
			assert.JSONEq(t, `{"keyEvents":{"seq":6,"seq64":"6"}}`, string(resp.Data))

			s = tr.subscribe(t, e, query, map[string]any{"after": 5, "after64": "5"})
			resp, _ = s.next(t)
			require.NotEmpty(t, resp.Errors)
			assert.Equal(t, "BAD_USER_INPUT", resp.Errors[0].code())

			s = tr.subscribe(t, e, query, map[string]any{"after64": "0"})
			resp, _ = s.next(t)
			require.NotEmpty(t, resp.Errors)
			assert.Equal(t, "EVENTS_COMPACTED", resp.Errors[0].code())
			assert.Equal(t, "4", resp.Errors[0].Extensions["oldestSeq64"])
		})
	}
}
