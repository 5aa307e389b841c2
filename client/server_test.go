package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keypool/keypool/client"
	"github.com/keypool/keypool/graph"
	"github.com/keypool/keypool/internal/cutproxy"
	"github.com/keypool/keypool/keystore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is the real GraphQL endpoint on an in-memory pool, behind a recorder
// of the operations it was sent and a switch that makes it answer UNAVAILABLE, as a
// server does whose shared store is down.
type testServer struct {
	store *keystore.Pool
	clock clockwork.Clock
	srv   *httptest.Server
	obs   *observer
	down  atomic.Bool
	// noStreams refuses websocket upgrades: event streams cannot be had.
	noStreams atomic.Bool

	mu   sync.Mutex
	sent []sentOperation
}

type sentOperation struct {
	Name      string         `json:"operationName"`
	Variables map[string]any `json:"variables"`
}

// observer tells the test when the store's waiters and subscribers change.
type observer struct {
	keystore.NopObserver
	waiters, subscribers atomic.Int64
}

func (o *observer) WaitersChanged(delta int)     { o.waiters.Add(int64(delta)) }
func (o *observer) SubscribersChanged(delta int) { o.subscribers.Add(int64(delta)) }

func newTestServer(t *testing.T, clock clockwork.Clock, opts keystore.Options) *testServer {
	t.Helper()
	ts := &testServer{clock: clock, obs: &observer{}}
	opts.Observer = ts.obs
	store, err := keystore.NewMemory(clock, opts)
	require.NoError(t, err)
	ts.store = store
	gql := graph.NewServer(store, graph.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	mux.Handle("/graphql", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ts.noStreams.Load() && r.Header.Get("Upgrade") != "" {
			http.Error(w, "no streams here", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodPost {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var op sentOperation
			_ = json.Unmarshal(body, &op)
			ts.mu.Lock()
			ts.sent = append(ts.sent, op)
			ts.mu.Unlock()
			if ts.down.Load() {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"data":null,"errors":[{"message":"the store cannot be reached","extensions":{"code":"UNAVAILABLE"}}]}`)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		gql.ServeHTTP(w, r)
	}))
	ts.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		ts.srv.CloseClientConnections()
		ts.srv.Close()
		_ = store.Close()
	})
	return ts
}

// client returns a client of the server, closed when the test ends.
func (ts *testServer) client(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(ts.srv.URL, opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// viaProxy returns a client whose connections to the server go through a proxy
// that the test can cut.
func (ts *testServer) viaProxy(t *testing.T) (*cutproxy.Proxy, *client.Client) {
	t.Helper()
	proxy, err := cutproxy.New(ts.srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(proxy.Close)
	c, err := client.New("http://" + proxy.Addr())
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return proxy, c
}

// count returns how many operations named name the server was sent.
func (ts *testServer) count(name string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, op := range ts.sent {
		if op.Name == name {
			n++
		}
	}
	return n
}

// last returns the variables of the last operation named name.
func (ts *testServer) last(t *testing.T, name string) map[string]any {
	t.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for i := len(ts.sent) - 1; i >= 0; i-- {
		if ts.sent[i].Name == name {
			return ts.sent[i].Variables
		}
	}
	t.Fatalf("no %s was sent", name)
	return nil
}

// waitFor polls cond, for effects of other goroutines that the test cannot wait on
// otherwise (a store's subscriber count, a key's state after an unblock).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, 5*time.Millisecond, what)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitSubscribers waits until the store has n live subscriptions.
func (ts *testServer) waitSubscribers(t *testing.T, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return ts.obs.subscribers.Load() == n }, 10*time.Second, time.Millisecond,
		"want %d subscribers, have %d", n, ts.obs.subscribers.Load())
}
